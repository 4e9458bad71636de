# A real node for the local control plane (issue 36): Debian's containerd and a
# kubelet of the control plane's pinned release, images built here with buildah.
# Needs root (cgroups, mounts, a bridge). See hack/node/README.md.
#
# NODE=1 (the default when make runs as root): `make test` builds the node and
# its images and the e2e suite runs its worker Pods, the chart's operator and
# the node's own tests on it. NODE=0: the e2e suite runs on the control plane
# alone, worker Pods as local processes (tests/support/kubelet.py), and the
# node's tests are skipped.
NODE ?= $(if $(filter 0,$(shell id -u)),1,0)
NODE_LOG := $(abspath $(CACHE_DIR))/node-images.log

ifeq ($(NODE),1)
# Before the control plane: `node` builds it, with the images alongside.
TEST_PREREQS := $(patsubst controlplane,node controlplane,$(TEST_PREREQS))
export JOBSTEAD_E2E_NODE := 1
# `make cluster-up` starts the node too.
CLUSTER_UP_ARGS := --node
cluster-up: node
endif

##@ Local Kubernetes node

.PHONY: node-packages
node-packages: ## Install containerd, runc, CNI plugins, iptables, buildah, debootstrap, gcc (Debian), when missing.
	@hack/node/packages.sh

# The base, jobstead and testapp images (debootstrap, pip: network and disk)
# build in the background while Go compiles the control plane and the kubelet
# (CPU); pause needs the kubelet build's pause binary. Each step is skipped when
# its cache key matches, so a warm `make node` takes a few seconds.
.PHONY: node
node: node-packages ## Build the control plane, the kubelet, pause and the node's images (once per input set).
	@mkdir -p $(dir $(NODE_LOG))
	@hack/node/images.sh build base jobstead testapp >$(NODE_LOG) 2>&1 & images=$$!; \
	  hack/controlplane/build.sh && hack/node/build.sh; built=$$?; \
	  wait $$images; imaged=$$?; cat $(NODE_LOG); \
	  [ $$built -eq 0 ] && [ $$imaged -eq 0 ]
	@hack/node/images.sh

.PHONY: node-up
node-up: venv node ## cluster-up with a node: the control plane, containerd and a Ready kubelet. Stop with cluster-down.
	@$(CONTROLPLANE_CLI) up --node

.PHONY: e2e-node
e2e-node: venv system-deps node ## The node e2e tests (test_node*.py) on a control plane with a real node for the session.
	JOBSTEAD_E2E_NODE=1 $(PY) -m pytest -m e2e tests/e2e/test_node.py tests/e2e/test_node_workers.py tests/e2e/test_node_operator.py $(PYTEST_ARGS)

.PHONY: node-images
node-images: ## Print the node's image names (base, pause, jobstead, testapp) for kubectl run / helm --set.
	@hack/node/images.sh archives | sed 's#^\([a-z]*\)=.*/\([a-z]*\)-\([0-9a-f]*\)\.tar$$#\1\tlocalhost/jobstead/\2:\3#'
