# Two commands on a fresh clone: `make demo` and `make test` (each sets up .venv first).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench clean package-lite package-full

$(STAMP): pyproject.toml constraints.txt packaging/line-controller/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,onnx,mobile,ray,report,package]'
	# wheels of the line controller's requirements, for its offline clean-venv test
	$(BIN)/python -m pip download --quiet -d $(VENV)/line-wheels -c constraints.txt \
		-r packaging/line-controller/requirements.txt
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sam-inspect demo

test: $(STAMP)
	$(BIN)/ruff check .
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/engine.py --model vit_b --json results/bench_vit_b.json

# Desktop bundles (packaging/desktop/README.md): dist/sam-inspect-lite/, dist/sam-inspect-full/
package-lite: $(STAMP)
	$(BIN)/python packaging/desktop/build.py lite
	dist/sam-inspect-lite/sam-inspect --self-test --forbid-torch

package-full: $(STAMP)
	$(BIN)/python packaging/desktop/build.py full

clean:
	rm -rf $(VENV) results .pytest_cache .ruff_cache build dist
