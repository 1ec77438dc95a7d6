# svdslice image: build with the project's own scripts, run the single self-contained binary.
# docker build -t svdslice . && docker run -p 8080:8080 -v svdslice-data:/data svdslice
FROM debian:12 AS build
WORKDIR /src
COPY scripts/setup.sh scripts/setup.sh
RUN scripts/setup.sh build
COPY . .
RUN BUILD_DIR=/build scripts/build.sh -DSVDSLICE_CUDA=OFF

FROM debian:12-slim
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libopenblas0-pthread liblapacke libpng16-16 libjansson4 libmicrohttpd12 libdeflate0 zlib1g curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /build/svdslice /usr/local/bin/svdslice
RUN useradd --system --home /data svdslice && mkdir -p /data && chown svdslice /data
USER svdslice
VOLUME /data
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["svdslice", "serve", "--bind", "0.0.0.0", "--port", "8080", "--data", "/data"]
