# A real node for the local control plane (issue 36): Debian's containerd and a
# kubelet of the control plane's pinned release, images built here with buildah.
# Needs root (cgroups, mounts, a bridge). See hack/node/README.md.
# Not part of `make test` yet: its own targets until the e2e suite runs on it.

##@ Local Kubernetes node

.PHONY: node-packages
node-packages: ## Install containerd, runc, CNI plugins, iptables, buildah, debootstrap, gcc (Debian), when missing.
	@hack/node/packages.sh

.PHONY: node
node: node-packages controlplane ## Build the kubelet, pause and the base/pause/jobstead images (once per input set).
	@hack/node/build.sh
	@hack/node/images.sh

.PHONY: node-up
node-up: venv node ## cluster-up with a node: the control plane, containerd and a Ready kubelet. Stop with cluster-down.
	@$(CONTROLPLANE_CLI) up --node

.PHONY: e2e-node
e2e-node: venv system-deps node ## The node e2e tests (test_node*.py) on a control plane with a real node for the session.
	JOBSTEAD_E2E_NODE=1 $(PY) -m pytest -m e2e tests/e2e/test_node.py tests/e2e/test_node_workers.py $(PYTEST_ARGS)

.PHONY: node-images
node-images: ## Print the node's image names (base, pause, jobstead) for kubectl run / helm --set.
	@hack/node/images.sh archives | sed 's#^\([a-z]*\)=.*/\([a-z]*\)-\([0-9a-f]*\)\.tar$$#\1\tlocalhost/jobstead/\2:\3#'
