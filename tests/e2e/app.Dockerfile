# The e2e tests' worker image: the jobstead image (BASE) with the test apps on the
# Python path, so a JobHandler's `app: tests.apps.probes:app` imports inside a Pod.
# hack/node/images.sh builds it for the local node.
ARG BASE
FROM ${BASE}
COPY tests/__init__.py /app/tests/__init__.py
COPY tests/apps /app/tests/apps
ENV PYTHONPATH=/app
