# Local Kubernetes control plane: built from Go modules, run on 127.0.0.1 (issue 5).
# No Docker engine runs here, so kind cannot; see hack/controlplane/build.sh.

CONTROLPLANE_CLI := $(PY) -m tests.support.controlplane

# `make test` builds it first, with its output visible rather than inside pytest.
TEST_PREREQS += controlplane

##@ Local Kubernetes

.PHONY: controlplane
controlplane: ## Build etcd, kube-apiserver, -controller-manager, -scheduler, kubectl, helm (once per pin set).
	@hack/controlplane/build.sh

.PHONY: cluster-up
cluster-up: venv controlplane ## Start the local control plane in the background (with NODE=1, a node too); prints the KUBECONFIG to use.
	@$(CONTROLPLANE_CLI) up $(CLUSTER_UP_ARGS)

.PHONY: cluster-down
cluster-down: venv ## Stop the local control plane started by cluster-up and delete its data.
	@$(CONTROLPLANE_CLI) down
