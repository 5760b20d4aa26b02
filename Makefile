# Everything a user runs. `make demo` and `make test` set up from scratch.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTEST_ARGS ?=
# Triton's embedded server ships in the nvidia-pytriton wheel; it pins numpy<2 but we only need its binary.
PYTRITON := nvidia-pytriton==0.7.0

CLI := $(PY) -m yolov6_build
DEMO_MODEL ?= models/yolov6n_synthetic_320.pt
CHECKPOINT ?= $(DEMO_MODEL)
FLAVOUR ?= cpu
DATASET := artifacts/datasets/synthetic
CALIB ?= $(DATASET)/calib
# labelled images for QAT in build-repo: the demo model's own training set; empty (PTQ only) for other checkpoints
QAT ?= $(if $(filter $(DEMO_MODEL),$(CHECKPOINT)),$(DATASET)/annotations/instances_train.json,)
# layers build-repo keeps float, by module name (partial PTQ; docs/benchmarks.md: the head's 3x3 convs, +0.4 mAP)
EXCLUDE ?=
SOAK_MINUTES ?= 10
FUZZ_SECONDS ?= 600
FUZZ_COUNT ?= 5000

.PHONY: setup setup-services setup-deploy-tools test clean help demo build-repo serve dataset train-demo eval-demo eval-server quant-report scale-report qat-report train-repopt train-repvgg-sgd train-qarepvgg repopt-report qat-repopt bench-int8 bench-lite bench-silu bench-nms \
	bench-serving bench-serving-ab bench-gpu-standin bench loadtest soak gpu-check fleet images image-check setup-containers fuzz fuzz-server

help:  ## list the targets, one line each (the comment after each target in this Makefile)
	@awk -F':.*## ' '/^[a-z0-9-]+:.*## /{printf "  %-20s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(VENV)/.installed  ## create .venv with pinned dependencies (CPU torch)

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt -c constraints.txt
	$(PIP) install -q --no-deps $(PYTRITON)
	$(PIP) install -q --no-deps -e .
	touch $@

# What the deployment tests run: Debian's prometheus (promtool) and haproxy, and the manifest checkers
# (kubernetes-validate, checkov) in a venv of their own. kubectl (kustomize) comes with the machine image.
DEPLOY_VENV := .venv-deploy
setup-services:  ## install Debian's prometheus and haproxy if missing (apt-get, as root)
	@command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v haproxy >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		prometheus haproxy >/dev/null; }

setup-deploy-tools: $(DEPLOY_VENV)/.installed  ## kubernetes-validate and checkov in .venv-deploy

$(DEPLOY_VENV)/.installed: deploy/requirements-tools.txt deploy/constraints-tools.txt
	test -x $(DEPLOY_VENV)/bin/python || python3 -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/pip install -q -r deploy/requirements-tools.txt -c deploy/constraints-tools.txt
	touch $@

test: setup setup-services setup-deploy-tools setup-containers  ## run the test suite (CPU only; GPU/TensorRT tests skip with a reason)
	$(PY) -m pytest -ra $(PYTEST_ARGS)

demo: setup  ## build the CPU repository from the demo model, serve it, detect sample images, stop
	$(CLI) demo --checkpoint $(DEMO_MODEL)

build-repo: setup $(if $(filter $(DATASET)/%,$(CALIB) $(QAT)),dataset)  ## INT8 model_repository/$(FLAVOUR) from $(CHECKPOINT): PTQ on $(CALIB), then QAT on $(QAT) if set (FLAVOUR=cpu|gpu; EXCLUDE=layers kept float)
	$(CLI) build-repo $(CHECKPOINT) --flavour $(FLAVOUR) --calib $(CALIB) $(if $(QAT),--qat $(QAT)) $(if $(EXCLUDE),--exclude $(EXCLUDE))

# The cpu repository's model, built from CHECKPOINT only when missing: the targets that serve or measure
# model_repository/cpu depend on it, so they never overwrite a repository built from your own checkpoint.
CPU_REPO_MODEL := model_repository/cpu/yolov6_detector/1/model.onnx
$(CPU_REPO_MODEL): | setup
	$(MAKE) build-repo FLAVOUR=cpu

serve: setup  ## serve model_repository/cpu on 127.0.0.1 (8000 http, 8001 grpc, 8002 metrics) until Ctrl-C; builds it first if needed
	@if [ "$(FLAVOUR)" = gpu ]; then echo "the gpu repository is served by the Triton container: see docs/gpu.md"; exit 2; fi
	$(MAKE) $(CPU_REPO_MODEL)
	$(CLI) serve model_repository/cpu

dataset: setup  ## generate the synthetic COCO-format dataset (train/val/calib) into $(DATASET)
	test -f $(DATASET)/annotations/instances_calib.json || $(CLI) make-dataset -o $(DATASET)

train-demo: dataset  ## train the demo YOLOv6-n at 320 on CPU (about 45 min on 2 idle cores; resumable), write models/
	$(CLI) train --data $(DATASET) -o artifacts/train_demo --size n --img-size 320 --epochs 22 --batch-size 16 \
		--optimizer adamw --lr 0.002 --weight-decay 0.05 --eval-every 5 --eval-limit 100
	$(CLI) fuse artifacts/train_demo/model.pt -o $(DEMO_MODEL)

REPOPT_MODEL ?= models/yolov6n_repopt_synthetic_320.pt
train-repopt: dataset  ## RepOpt demo model: 4-epoch hyper-search for the branch scales (their lr x30), then 12 epochs of RepOpt SGD (about 25 min; resumable)
	$(CLI) train --data $(DATASET) -o artifacts/train_repopt_hs --size n --img-size 320 --epochs 4 --batch-size 16 \
		--training-mode hyper_search --optimizer sgd --lr 0.02 --weight-decay 5e-4 --eval-every 4 --eval-limit 100 \
		--scale-lr-mult 30
	$(CLI) train --data $(DATASET) -o artifacts/train_repopt --size n --img-size 320 --epochs 12 --batch-size 16 \
		--training-mode repopt --scales artifacts/train_repopt_hs/model.pt --optimizer sgd --lr 0.02 \
		--weight-decay 5e-4 --eval-every 12 --eval-limit 100
	$(CLI) fuse artifacts/train_repopt/model.pt -o $(REPOPT_MODEL)

REPVGG_SGD_MODEL ?= models/yolov6n_repvgg_sgd12_synthetic_320.pt
train-repvgg-sgd: dataset  ## RepOpt's equal-budget baseline: RepVGG blocks, the same 12 epochs of SGD (about 25 min)
	$(CLI) train --data $(DATASET) -o artifacts/train_repvgg_sgd --size n --img-size 320 --epochs 12 --batch-size 16 \
		--training-mode repvgg --optimizer sgd --lr 0.02 --weight-decay 5e-4 --eval-every 12 --eval-limit 100
	$(CLI) fuse artifacts/train_repvgg_sgd/model.pt -o $(REPVGG_SGD_MODEL)

QAREPVGG_MODEL ?= models/yolov6n_qarepvgg_sgd12_synthetic_320.pt
train-qarepvgg: dataset  ## QARepVGG beside RepOpt's equal-budget pair: QARepVGG blocks, the same 12 epochs of SGD (about 50 min)
	$(CLI) train --data $(DATASET) -o artifacts/train_qarepvgg --size n --img-size 320 --epochs 12 --batch-size 16 \
		--training-mode qarepvggv2 --optimizer sgd --lr 0.02 --weight-decay 5e-4 --eval-every 12 --eval-limit 100
	$(CLI) fuse artifacts/train_qarepvgg/model.pt -o $(QAREPVGG_MODEL)

repopt-report: dataset  ## RepVGG- vs RepOpt-trained models (equal budget + the demo model): FP32 mAP, PTQ drop, weight statistics
	$(CLI) repopt-report -o artifacts/reports/repopt  # models: the equal-budget pair + the demo model (see --help)

qat-repopt: dataset  ## the QAT table (FP32/PTQ/partial/QAT/QAT+CWD/ORT) for the RepOpt model
	$(CLI) qat $(REPOPT_MODEL) -o artifacts/reports/qat_repopt

scale-report: dataset  ## mAP and lint findings of per-branch, merged and tied INT8 scales on the demo model
	$(CLI) scale-report $(DEMO_MODEL) -o artifacts/reports/scale_sharing

eval-demo: dataset  ## COCO mAP of the demo model on the val split (PyTorch and ONNX Runtime FP32)
	$(CLI) eval $(DEMO_MODEL) -o artifacts/eval/demo_fp32_torch.json
	$(CLI) export-onnx $(DEMO_MODEL) -o artifacts/eval/demo_fp32.onnx
	$(CLI) eval artifacts/eval/demo_fp32.onnx --img-size 320 -o artifacts/eval/demo_fp32_ort.json

eval-server: setup $(CPU_REPO_MODEL)  ## COCO mAP of the served INT8 ensemble (live server, gRPC) next to the same graph offline
	$(CLI) eval-server model_repository/cpu -o artifacts/eval/server_int8.json

quant-report: dataset  ## mAP of FP32 / PTQ per calibrator / partial PTQ / stock ORT on the demo model
	$(CLI) quant-report $(DEMO_MODEL) -o artifacts/reports/quantization

qat-report: dataset  ## QAT and QAT + channel-wise distillation from the PTQ demo model: mAP table, Q/DQ + ORT exports
	$(CLI) qat $(DEMO_MODEL) -o artifacts/reports/qat

bench-int8: setup $(CPU_REPO_MODEL)  ## served CPU INT8 vs OpenVINO FP32, NNCF and ORT stock INT8: n/s at 640, demo at 320 (as served) with mAP
	$(CLI) bench-int8 -o artifacts/reports/bench_int8 $(if $(filter $(DEMO_MODEL),$(CHECKPOINT)),--demo-repository model_repository/cpu)

bench-lite: setup  ## YOLOv6-Lite s/m/l beside n at 320 (random weights): served INT8 vs OpenVINO FP32, NNCF, ORT
	$(CLI) bench-int8 --sizes n lite_s lite_m lite_l --img-size 320 --no-demo -o artifacts/reports/bench_lite

bench-silu: setup  ## OpenVINO's cost of one head conv by activation form (why the CPU form writes SiLU with tanh)
	$(CLI) bench-silu -o artifacts/reports/bench_silu

bench-nms: setup $(CPU_REPO_MODEL)  ## NMS step cost per image (random worst case and the demo model's real candidates)
	$(CLI) bench-nms --detector-onnx model_repository/cpu/yolov6_detector/1/model.onnx -o artifacts/reports/bench_nms

bench-serving: setup $(CPU_REPO_MODEL)  ## server vs in-process, OpenCV vs DALI letterbox, FP32 vs INT8 served; c=1..32 (about 7 min)
	$(CLI) bench-serving model_repository/cpu -o artifacts/reports/bench_serving

bench-gpu-standin: setup $(CPU_REPO_MODEL)  ## the gpu flavour's queue delays and preprocess instances on its CPU stand-in, 2 rounds (about 5 min)
	$(PY) -m tests.gpu_standin.bench --checkpoint $(DEMO_MODEL) -o artifacts/reports/gpu_standin

bench-serving-ab: setup  ## two CPU repositories A=… B=… served in turn, 3 rounds at c=1,4,32: medians and B / A (about 5 min)
	@test -n "$(A)" -a -n "$(B)" || { echo "usage: make bench-serving-ab A=model_repository/cpu B=other/cpu (built repositories)"; exit 2; }
	$(CLI) bench-serving-ab $(A) $(B) -o artifacts/reports/bench_serving_ab

bench: bench-int8 bench-nms bench-serving  ## bench-int8, bench-nms and bench-serving

soak: setup $(CPU_REPO_MODEL)  ## $(SOAK_MINUTES) min at 80% of the measured max QPS: failures, server memory, latency drift
	$(CLI) soak model_repository/cpu --minutes $(SOAK_MINUTES) -o artifacts/reports/soak

loadtest: setup $(CPU_REPO_MODEL)  ## headless Locust sweep (gRPC + HTTP, c=1..32, 15 s or 5000 requests a step, loopback)
	$(CLI) loadtest model_repository/cpu -o artifacts/reports/loadtest

gpu-check: setup  ## GPU host with docker: build INT8/FP16 plans, serve, compare with CPU flavour, DALI vs CPU QPS (report in artifacts/reports/gpu_check)
	$(CLI) gpu-check --preflight-only
	$(MAKE) dataset
	$(CLI) gpu-check $(CHECKPOINT) --calib $(CALIB) -o artifacts/reports/gpu_check

fuzz: setup  ## FUZZ_SECONDS (default 600) per route of mutated images (every format) through the served decode routes, in child processes; crashes bisected and saved (artifacts/reports/fuzz)
	$(CLI) fuzz --seconds $(FUZZ_SECONDS)

fuzz-server: setup $(CPU_REPO_MODEL)  ## FUZZ_COUNT (default 5000) mutated images and the crash corpus to a live server: clear answers, same server PIDs
	$(CLI) fuzz-server model_repository/cpu --count $(FUZZ_COUNT)

clean:  ## remove generated artifacts (keeps .venv)
	rm -rf artifacts .pytest_cache

FLEET_REPLICAS ?= 3
fleet: setup $(CPU_REPO_MODEL) setup-services  ## FLEET_REPLICAS (default 3) embedded replicas behind HAProxy: req/s per N, a replica stopped mid-run (about 8 min)
	$(CLI) fleet model_repository/cpu --replicas $(FLEET_REPLICAS)

# Images for a cluster (docs/scaling-out.md): the server image of FLAVOUR and the repository image on top
# of it, named $(REGISTRY)/yolov6-int8/<name>:$(IMAGE_TAG). BUILD_OPTS go to every build.
CONTAINER_ENGINE ?= docker
REGISTRY ?= localhost
IMAGE_TAG ?= 0.1.0
BUILD_OPTS ?=
REPOSITORY ?= model_repository/$(FLAVOUR)
IMAGE = $(REGISTRY)/yolov6-int8/$(1):$(IMAGE_TAG)
SERVER_IMAGE_cpu := cpu
SERVER_IMAGE_gpu := engine
images:  ## FLAVOUR's images for REGISTRY (server + model repository, after build-repo); CONTAINER_ENGINE=docker|podman
	@test -f $(REPOSITORY)/manifest.json || \
		{ echo "$(REPOSITORY) is not built: run make build-repo FLAVOUR=$(FLAVOUR) first"; exit 2; }
	$(CONTAINER_ENGINE) build $(BUILD_OPTS) -f docker/Dockerfile.$(SERVER_IMAGE_$(FLAVOUR)) \
		-t $(call IMAGE,$(SERVER_IMAGE_$(FLAVOUR))) .
	$(if $(filter gpu,$(FLAVOUR)),$(CONTAINER_ENGINE) build $(BUILD_OPTS) -f docker/Dockerfile.triton -t $(call IMAGE,triton) .)
	chmod -R a+rX $(REPOSITORY)  # the server runs as uid 1000
	$(CONTAINER_ENGINE) build $(BUILD_OPTS) -f docker/Dockerfile.repository \
		--build-arg BASE=$(call IMAGE,$(SERVER_IMAGE_$(FLAVOUR))) -t $(call IMAGE,$(FLAVOUR)-repository) $(REPOSITORY)
	@echo "next: $(CONTAINER_ENGINE) push each image, then python -m yolov6_build k8s-overlay --flavour $(FLAVOUR)" \
		"--image yolov6-int8/<name>=<the pushed name>@sha256:<its digest> (docs/scaling-out.md)"

# podman (as root, runc, cgroupfs) and debootstrap for image-check; Debian's packages, like setup-services.
setup-containers:  ## install podman, runc and debootstrap if missing (apt-get, as root)
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v catatonit >/dev/null && \
		command -v debootstrap >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		podman runc catatonit debootstrap >/dev/null; }

image-check: setup setup-containers setup-deploy-tools  ## build the cpu and Locust images on a stand-in base, run them and play the cpu pod (report in artifacts/reports/image_check)
	$(PY) -m pytest -ra tests/images $(PYTEST_ARGS)

