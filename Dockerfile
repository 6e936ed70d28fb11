# syntax=docker/dockerfile:1
# seatkeeper's container: built with cargo, run stripped on a slim base as a non-root user.
#   docker build -t seatkeeper --build-arg SEATKEEPER_GIT_COMMIT=$(git rev-parse --short HEAD) .
#   docker run -p 8080:8080 -v seatkeeper-data:/data seatkeeper
# The build stage runs deploy/build.sh, the same script CI runs (CI has no container engine).

FROM rust:1.95-slim-bookworm AS build
ARG SEATKEEPER_GIT_COMMIT=unknown
ENV SEATKEEPER_GIT_COMMIT=${SEATKEEPER_GIT_COMMIT}
WORKDIR /src
COPY . .
RUN bash deploy/build.sh /out

FROM debian:bookworm-slim
# ca-certificates: TLS to a hosted PostgreSQL, to webhook receivers and identity providers.
# Not pinned: the point of this package is to take the distribution's current roots.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin seatkeeper \
 && mkdir -p /data \
 && chown seatkeeper:seatkeeper /data
COPY --from=build /out/seatkeeper /usr/local/bin/seatkeeper
USER 10001:10001
VOLUME ["/data"]
ENV SEATKEEPER_DATABASE=sqlite:///data/seatkeeper.db \
    SEATKEEPER_LISTEN=0.0.0.0:8080 \
    SEATKEEPER_LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["seatkeeper", "healthcheck"]
ENTRYPOINT ["seatkeeper"]
CMD ["serve"]
