"""Tuning the learned engine on a site's masks (the data flywheel): sources (the inspection
store's accepted defects), run (split, measure, train, gate, register). Imports app.store and
sam_engine; nothing in sam_engine imports it."""
