# unsupseg: every target creates the virtual environment it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch and torchvision are pinned to the builds this project is tested with (a CUDA build
# that also runs on the CPU). Override on other platforms, e.g. TORCH_SPEC="torch torchvision".
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed
RUN    ?= runs/default
DEMO   ?= runs/demo

.PHONY: install train model bioimageio demo test test-heavy test-all test-fast golden bench lint format clean

install: $(STAMP)

# --no-cache-dir: the CUDA build of torch and its libraries take about 6 GB in the venv; pip's cache
# would hold another copy of every downloaded wheel on a disk that may be nearly full
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-cache-dir --upgrade "pip>=23.2"
	$(BIN)/python -m pip install --quiet --no-cache-dir $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet --no-cache-dir -e ".[train,dev,ray,bioimageio,napari]"
	# annotated real nuclei for the benchmark and its test: only the wheel's data files are read,
	# --no-deps keeps its TensorFlow stack out
	$(BIN)/python -m pip install --quiet --no-cache-dir --no-deps stardist==0.9.2
	touch $(STAMP)

## Train the default model on the built-in data -> $(RUN)/model.pt
train: $(STAMP)
	$(BIN)/segtrain --out $(RUN) --overwrite

## Retrain, export and package the default model: seginfer's when --model is not given, and the
## start of segtrain --data DIR
model: train
	$(BIN)/segexport $(RUN)/model.pt infer/model/default.onnx --overwrite
	cp $(RUN)/model.pt train/models/default.pt  # the start of segtrain --data DIR (adaptation)

## Package the default model for bioimage.io (deepImageJ, ilastik, QuPath, napari) and test it as the zoo does
bioimageio: $(RUN)/model.pt
	$(BIN)/segexport $(RUN)/model.pt $(RUN)/model.bioimageio.zip --bioimageio --overwrite
	$(BIN)/bioimageio test $(RUN)/model.bioimageio.zip --devices '["CPUExecutionProvider"]'

## The main job on built-in data: train briefly, export, segment a sample folder, print the report
demo: $(STAMP)
	$(BIN)/segtrain --out $(DEMO) --overwrite --epochs 8
	$(BIN)/segexport $(DEMO)/model.pt $(DEMO)/model.onnx --overwrite
	$(BIN)/python -m unsupseg.train.sample $(DEMO)/sample --overwrite
	$(BIN)/seginfer --input $(DEMO)/sample/images --masks $(DEMO)/sample/masks \
	    --output $(DEMO)/masks --model $(DEMO)/model.onnx --overwrite

## The everyday suite: everything but the heavy whole-chain runs (under 10 minutes on 2 cores)
test: $(STAMP)
	$(BIN)/python -m pytest -m "not heavy"

## The heavy whole-chain runs make test leaves out: the quick benchmark, a real adaptation (CI runs them)
test-heavy: $(STAMP)
	$(BIN)/python -m pytest -m heavy

## Both sets in one run
test-all: $(STAMP)
	$(BIN)/python -m pytest

## Quick loop for development: everything but the slow end-to-end tests (and the heavy ones)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

## Rewrite tests/golden/packaged_masks.npz (the packaged model's masks on real images, checked by
## tests/test_golden.py) after a change meant to change them; say why in the commit message
golden: $(STAMP)
	$(BIN)/python tests/golden_masks.py

SWEEP := runs/w4/model.pt $(RUN)/model.pt runs/w16/model.pt
bench: $(STAMP) $(SWEEP)
	$(BIN)/python -m bench.run --checkpoint $(RUN)/model.pt --sweep $(subst $(eval) ,$(comma),$(SWEEP))

comma := ,
# Models for the width sweep (and the default one) are trained once, only if missing.
$(RUN)/model.pt: | $(STAMP)
	$(BIN)/segtrain --out $(RUN) --overwrite

runs/w%/model.pt: | $(STAMP)
	$(BIN)/segtrain --out runs/w$* --width $* --overwrite -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache *.egg-info
