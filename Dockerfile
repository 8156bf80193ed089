# regcleaner: a drop-in image for the older cleanup script.
#   docker run --rm -v /srv/registry:/registry:ro -e REGISTRY_URL=https://registry.example.com IMAGE
# The build stage installs the project into a venv; the runtime stage copies only that.

FROM python:3.12-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY regcleaner ./regcleaner
# pip compiles the bytecode here: the runtime image cannot write it (PYTHONDONTWRITEBYTECODE,
# a non-root user), and compiling aiohttp and friends on every start of a CronJob costs
# about a second.
RUN python -m venv /opt/regcleaner \
    && /opt/regcleaner/bin/pip install ".[s3,fast]" \
    && /opt/regcleaner/bin/regcleaner --version

FROM python:3.12-slim-bookworm
LABEL org.opencontainers.image.title="regcleaner" \
      org.opencontainers.image.description="Delete untagged manifests from a Docker/OCI registry, safely" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/regcleaner /opt/regcleaner
RUN groupadd --system --gid 10001 regcleaner \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin regcleaner
# REGISTRY_DIR is deliberately not set: on disk the default is already /registry, and
# on S3 the older script's default is the bucket root, which a value here would break.
ENV PATH=/opt/regcleaner/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /tmp
VOLUME ["/registry"]
ENTRYPOINT ["regcleaner"]
CMD ["clean"]
