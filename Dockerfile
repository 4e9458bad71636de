# One image for `jobstead operator` and `jobstead worker`.
# Apps build their worker image FROM this one (adding their code) or install
# `jobstead` into their own image. Nothing that compiles reaches the final
# stage: psycopg's binary wheel carries libpq.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY runtime runtime
COPY operator operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[operator,dashboard]'

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 --user-group jobstead
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels 'jobstead[operator,dashboard]' \
    && rm -rf /wheels /root/.cache
USER 10001:10001
WORKDIR /home/jobstead
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["jobstead"]
CMD ["--help"]
