# The e2e suite against a real cluster: kind, on machines with a Docker engine (issue 8).
# Our own machines have none (see mk/controlplane.mk): there `make test` runs the
# same tests against the local control plane, and this fragment is not used.
#
# e2e-kind builds the repo's image, loads it into a kind cluster, installs the
# chart with it (the in-cluster operator must come up and pass its liveness
# probe), then runs tests/e2e with JOBSTEAD_E2E_KUBECONFIG set, so the tests talk
# to kind instead of starting the local control plane.

KIND_VERSION ?= v0.33.0
KIND_BIN_DIR := $(abspath $(CACHE_DIR))/tools/kind-$(KIND_VERSION)
KIND := $(KIND_BIN_DIR)/kind
KIND_CLUSTER ?= jobstead-e2e
# Empty: the node image of this kind release.
KIND_NODE_IMAGE ?=
KIND_KUBECONFIG := $(abspath $(CACHE_DIR))/kind/$(KIND_CLUSTER).kubeconfig
KIND_IMAGE_REPO ?= jobstead
KIND_IMAGE_TAG ?= e2e
KIND_RELEASE ?= jobstead
KIND_NAMESPACE ?= jobstead-system
# The pinned helm and kubectl from `make controlplane`.
KIND_HELM := $(abspath $(CACHE_DIR))/bin/helm
KIND_KUBECTL := $(abspath $(CACHE_DIR))/bin/kubectl --kubeconfig $(KIND_KUBECONFIG)

##@ E2E on kind (needs Docker)

.PHONY: docker-check
docker-check: ## Fail early, and say why, when no Docker engine answers.
	@docker info >/dev/null 2>&1 || { \
	  echo "make e2e-kind needs a running Docker engine, and 'docker info' failed." >&2; \
	  echo "Without Docker, 'make test' runs the same e2e tests on the local control plane." >&2; \
	  exit 1; }

$(KIND):
	@command -v go >/dev/null || { echo "installing kind $(KIND_VERSION) needs Go" >&2; exit 1; }
	GOBIN=$(KIND_BIN_DIR) GOTOOLCHAIN=local go install sigs.k8s.io/kind@$(KIND_VERSION)

.PHONY: kind-up
kind-up: docker-check $(KIND) ## Create the kind cluster (once) and write its kubeconfig under .cache/kind/.
	@mkdir -p $(dir $(KIND_KUBECONFIG))
	@if $(KIND) get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)'; then \
	  echo "kind cluster $(KIND_CLUSTER) already exists"; \
	else \
	  $(KIND) create cluster --name $(KIND_CLUSTER) --wait 180s $(if $(KIND_NODE_IMAGE),--image $(KIND_NODE_IMAGE)); \
	fi
	$(KIND) get kubeconfig --name $(KIND_CLUSTER) > $(KIND_KUBECONFIG)

.PHONY: kind-down
kind-down: ## Delete the kind cluster made by kind-up / e2e-kind.
	@if [ -x $(KIND) ]; then $(KIND) delete cluster --name $(KIND_CLUSTER); fi
	rm -f $(KIND_KUBECONFIG)

.PHONY: kind-image
kind-image: docker-check kind-up ## Build the repo's Dockerfile and load the image into the kind nodes.
	docker build -t $(KIND_IMAGE_REPO):$(KIND_IMAGE_TAG) .
	$(KIND) load docker-image $(KIND_IMAGE_REPO):$(KIND_IMAGE_TAG) --name $(KIND_CLUSTER)

# The installed operator serves its own namespace only: the tests run their own
# operators in their own namespaces, and two operators must never act on one
# resource. Its database is SQLite on the pod's /tmp, enough to show the image,
# the chart and its RBAC working in a real cluster: `helm --wait` returns once
# every replica passes its readiness probe (kopf's /healthz).
.PHONY: kind-install
kind-install: kind-image controlplane ## helm install the chart into kind with the image just built.
	$(KIND_KUBECTL) create namespace $(KIND_NAMESPACE) --dry-run=client -o yaml | $(KIND_KUBECTL) apply -f -
	$(KIND_KUBECTL) -n $(KIND_NAMESPACE) create secret generic jobstead-database \
	  --from-literal=url=sqlite:////tmp/jobstead.db --dry-run=client -o yaml | $(KIND_KUBECTL) apply -f -
	$(KIND_HELM) --kubeconfig $(KIND_KUBECONFIG) upgrade --install $(KIND_RELEASE) charts/jobstead \
	  --namespace $(KIND_NAMESPACE) \
	  --set image.repository=$(KIND_IMAGE_REPO) --set image.tag=$(KIND_IMAGE_TAG) --set image.pullPolicy=Never \
	  --set 'watchNamespaces={$(KIND_NAMESPACE)}' \
	  --wait --timeout 5m

.PHONY: e2e-kind
e2e-kind: docker-check venv system-deps kind-install ## The e2e suite against kind: image, chart, then tests/e2e.
	JOBSTEAD_E2E_KUBECONFIG=$(KIND_KUBECONFIG) $(PY) -m pytest -m e2e tests/e2e $(PYTEST_ARGS)
