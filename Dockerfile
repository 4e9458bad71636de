# One image for `jobstead operator` and `jobstead worker`.
# Apps build their worker image FROM this one (adding their code) or install
# `jobstead` into their own image. Nothing that compiles reaches the final
# stage: psycopg's binary wheel carries libpq.
#
# BASE is any image with Python 3.11+ and its venv module: the official
# python:3.11-slim by default; hack/node/images.sh passes a Debian image it
# builds itself where no registry can be reached. Jobstead lives in a virtual
# environment, so a distribution's own Python is left untouched (PEP 668).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY runtime runtime
COPY operator operator
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --no-cache-dir --wheel-dir /wheels '.[operator,dashboard]'

FROM ${BASE}
RUN useradd --create-home --uid 10001 --user-group jobstead
COPY --from=build /wheels /wheels
RUN python3 -m venv /opt/jobstead \
    && /opt/jobstead/bin/pip install --no-cache-dir --no-index --find-links /wheels 'jobstead[operator,dashboard]' \
    && rm -rf /wheels /root/.cache
ENV PATH=/opt/jobstead/bin:$PATH
USER 10001:10001
WORKDIR /home/jobstead
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["jobstead"]
CMD ["--help"]
