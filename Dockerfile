# syntax=docker/dockerfile:1
# jobtracker's API server. Build: `docker build -t jobtracker .`
# Run:   `docker run -p 8080:8080 -e JOBTRACKER_STORE=postgresql://… jobtracker`
# Other commands use the same image: `docker run --rm --entrypoint jobtracker jobtracker keys list`.
# Every `serve` flag is also a JOBTRACKER_* variable (`jobtracker serve --help` lists them).

# Build the wheel in a stage of its own: the build tools stay out of the image that runs.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY jobtracker ./jobtracker
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    JOBTRACKER_HOST=0.0.0.0 \
    JOBTRACKER_PORT=8080 \
    JOBTRACKER_LOG_FORMAT=json \
    JOBTRACKER_STORE=sqlite:////data/jobtracker.db
COPY --from=build /wheels /wheels
# The [postgres] extra: deploy/compose.yaml runs the image on PostgreSQL (SQLite needs nothing more).
RUN pip install "$(echo /wheels/*.whl)[postgres]" && rm -rf /wheels
# A user of its own, no login, no root: it owns only /data (the SQLite file, when there is one).
RUN useradd --system --uid 10001 --user-group --home-dir /data --create-home \
        --shell /usr/sbin/nologin jobtracker
USER jobtracker
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
# The slim image has no curl: Python asks /healthz itself. It answers without a key or the store.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('JOBTRACKER_PORT', '8080'), timeout=2)"]
# Exec form: jobtracker is PID 1 and gets `docker stop`'s SIGTERM itself (graceful shutdown).
STOPSIGNAL SIGTERM
ENTRYPOINT ["jobtracker", "serve"]
