"""Undo steps (QUndoCommand): one per prompt, per accepted defect, per deletion, per class change.
A defect brought back by undo/redo keeps its number (Annotator.restore).

The first redo() runs inside QUndoStack.push; the annotator has already done that work (so a
store error can stop the push), hence `_done`. Later undo/redo write to the store again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtGui import QUndoCommand

from app.gui.session import Snapshot
from app.inspection.findings import Finding

if TYPE_CHECKING:
    from app.gui.annotator import Annotator


class PromptCommand(QUndoCommand):
    """A click, a box or clearing the prompts: moves between two prompt snapshots."""

    def __init__(self, annotator: Annotator, before: Snapshot, after: Snapshot, text: str):
        super().__init__(text)
        self.a, self.before, self.after = annotator, before, after

    def redo(self) -> None:
        self.a.show_snapshot(self.after)

    def undo(self) -> None:
        self.a.show_snapshot(self.before)


class AcceptCommand(QUndoCommand):
    """Enter: the prompts' masks become stored defects and the prompts are cleared."""

    def __init__(self, annotator: Annotator, before: Snapshot, findings: list[Finding]):
        super().__init__(f"accept {len(findings)} defect(s)")
        self.a, self.before, self.findings = annotator, before, findings
        self._done = True

    def redo(self) -> None:
        if not self._done:  # an undone accept comes back under the same numbers
            self.a.restore(self.findings)
        self._done = False
        self.a.show_snapshot(())
        self.a.defects_changed()

    def undo(self) -> None:
        self.a.store_call(self.a.autosave.remove, self.a.inspection, self.findings)
        self.a.show_snapshot(self.before)
        self.a.defects_changed()


class DeleteCommand(QUndoCommand):
    """Delete an accepted defect (kept in the store, marked deleted)."""

    def __init__(self, annotator: Annotator, finding: Finding):
        super().__init__(f"delete {finding.defect_class}")
        self.a, self.finding = annotator, finding
        self._done = True

    def redo(self) -> None:
        if not self._done:
            self.a.store_call(self.a.autosave.remove, self.a.inspection, [self.finding])
        self._done = False
        self.a.defects_changed()

    def undo(self) -> None:
        self.a.restore([self.finding])  # back under its own number
        self.a.defects_changed()


class ClassCommand(QUndoCommand):
    """Change an accepted defect's class."""

    def __init__(self, annotator: Annotator, finding: Finding, old: str, new: str):
        super().__init__(f"class {old} -> {new}")
        self.a, self.finding, self.old, self.new = annotator, finding, old, new
        self._done = True

    def redo(self) -> None:
        if not self._done:
            self.a.store_call(self.a.autosave.set_class, self.a.inspection, self.finding,
                              self.new)
        self._done = False
        self.a.defects_changed()

    def undo(self) -> None:
        self.a.store_call(self.a.autosave.set_class, self.a.inspection, self.finding, self.old)
        self.a.defects_changed()
