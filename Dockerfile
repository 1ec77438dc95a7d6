# svdslice image: built with the project's own scripts; runs the one binary as a non-root user.
#   podman build --format docker -t svdslice .      # or: docker build -t svdslice .
#   podman run -p 127.0.0.1:8080:8080 -v svdslice-data:/data svdslice [serve flags, e.g. --api-key KEY]
# Flags after the image name go to `svdslice serve` after the ENTRYPOINT's and win over them
# (a later flag wins), e.g. `svdslice --port 9000` or `--data /data/other`.
# BASE is the Debian 12 image both stages start from. --format docker keeps the HEALTHCHECK
# (the OCI image format has none). scripts/image_test.sh builds and checks this image.
# CUDA=ON builds the GPU backends: BASE must then carry the CUDA toolkit and RUNTIME_BASE its
# runtime libraries (NVIDIA's CUDA images; docs/DEPLOY.md has the command). Not built by the tests.
ARG BASE=debian:12-slim
ARG RUNTIME_BASE=${BASE}
ARG CUDA=OFF

FROM ${BASE} AS build
ARG CUDA
WORKDIR /src
COPY scripts/setup.sh scripts/setup.sh
RUN scripts/setup.sh build
COPY . .
# No tests in the image: BUILD_TESTING=OFF, and only the server target.
RUN BUILD_DIR=/build TARGET=svdslice scripts/build.sh -DSVDSLICE_CUDA=${CUDA} -DBUILD_TESTING=OFF \
 && scripts/runtime_packages.sh /build/svdslice > /build/runtime-packages

FROM ${RUNTIME_BASE}
COPY --from=build /build/runtime-packages /tmp/runtime-packages
# Documentation is no use in the image (debian:12-slim drops it too); licences stay.
RUN printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
      'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' 'path-exclude /usr/share/locale/*' \
      > /etc/dpkg/dpkg.cfg.d/svdslice-nodoc \
 && apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(cat /tmp/runtime-packages) \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log /tmp/runtime-packages \
 && useradd --uid 10001 --user-group --home-dir /data --no-create-home --shell /usr/sbin/nologin svdslice \
 && mkdir -p /data && chown svdslice:svdslice /data
COPY --from=build /build/svdslice /usr/local/bin/svdslice
COPY docker/healthcheck.sh /usr/local/bin/svdslice-healthcheck
USER svdslice
WORKDIR /data
VOLUME /data
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["svdslice-healthcheck"]
ENTRYPOINT ["svdslice", "serve", "--bind", "0.0.0.0", "--port", "8080", "--data", "/data"]
