# serviceradar-poller container image: the wheel only, as a non-root user, no nats-server.
#
#   docker build -t serviceradar-poller:0.1.0 .
#   docker run --rm -v /etc/serviceradar:/etc/serviceradar:ro serviceradar-poller:0.1.0
#
# Base images cannot be pulled on the machines this repository is developed and
# tested on, so this file has not been built there: it is kept small and
# conventional (python:3.11-slim, a build stage that makes the wheel, a runtime
# stage that installs only that wheel and its dependencies). docs/deployment.md
# and deploy/k8s/ use the image it makes.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python -m pip install --no-cache-dir "build>=1.2"
COPY pyproject.toml README.md ./
COPY poller ./poller
RUN python -m build --wheel --outdir /dist .

FROM ${PYTHON_IMAGE}
# A fixed uid/gid, so Kubernetes' runAsNonRoot can check it and volumes can be chowned to it.
RUN groupadd --system --gid 10001 serviceradar-poller \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/serviceradar-poller \
        --shell /usr/sbin/nologin serviceradar-poller \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/serviceradar-poller
COPY --from=build /dist/ /tmp/dist/
RUN python -m venv /opt/serviceradar-poller \
 && /opt/serviceradar-poller/bin/pip install --no-cache-dir /tmp/dist/serviceradar_poller-*.whl \
 && rm -rf /tmp/dist
ENV PATH=/opt/serviceradar-poller/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SERVICERADAR_POLLER_LOG_FORMAT=json
USER 10001:10001
WORKDIR /var/lib/serviceradar-poller
# metrics_listen (/metrics, /healthz, /readyz, /status): bind it to an address only
# Prometheus and the platform's operators reach (docs/deployment.md).
EXPOSE 9464
ENTRYPOINT ["serviceradar-poller"]
CMD ["run", "--config", "/etc/serviceradar/poller.json"]
