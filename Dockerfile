# The vpc-cni image: `ipamd` (the node daemon, also `ipamd install-cni` for
# the init container) and the `vpc-cni` plugin that install-cni copies to the
# host's /opt/cni/bin. manifests/10-daemonset.yaml runs both from /usr/local/bin.
#
#   docker build -t <registry>/vpc-cni:0.1.0 .      (or: podman build ...)
#
# The plugin is linked statically (scripts/build-release.sh): it runs on the
# host, whose glibc may be older than this image's, and starts faster.
ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN scripts/build-release.sh \
    && install -D -m 0755 target/release/ipamd /out/ipamd \
    && install -D -m 0755 target/release/vpc-cni /out/vpc-cni

# Debian's glibc (the build stage's) plus `nft`, for operators to inspect
# ipamd's tables (`nft list table ip vpc_cni_nat`): ipamd itself spawns no
# program; SNAT, NetworkPolicy and the pod path speak netlink directly.
# tests/tests/manifests.rs checks that every program ipamd spawns is
# installed here.
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends nftables \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ipamd /usr/local/bin/ipamd
COPY --from=build /out/vpc-cni /usr/local/bin/vpc-cni
ENTRYPOINT ["/usr/local/bin/ipamd"]
CMD ["serve"]
