# loopp in a container: one static binary FROM scratch, the node running its
# job with both plugins as LOOPPs (links to the same binary), as a non-root
# user, its data in a volume, its HTTP port (/health, /metrics, /discovery,
# /plugins/NAME/metrics) published.
#
#   buildah bud -t loopp .        (or docker build -t loopp .)
#   podman run -p 127.0.0.1:6688:6688 -v loopp-data:/var/lib/loopp loopp
#   ... run --config /var/lib/loopp/job.json    another job than the default
#
# Hosts with no registry: `make image` builds the binary on the host and
# ships it on the same runtime stage (`--target image-prebuilt`).

# The build stage's image: Rust, make, cmake and a C++ compiler (make
# installs what is missing with apt-get). A test builds this stage with an
# image that brings the host's toolchain instead (no registry there).
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# make static installs cmake and g++ (apt-get, as root), builds loopp
# static and strips it.
RUN make static CARGO_TARGET_DIR=/src/target \
 && mkdir -p /out/bin /out/data /out/tmp \
 && cp target/x86_64-unknown-linux-gnu/release/dist/loopp /out/bin/loopp \
 && for p in loopp-node loopp-median loopp-devchain loopp-example; do ln -s loopp /out/bin/$p; done

# What the image is, wherever its binaries come from. (Not a stage picked
# by a build argument: buildah 1.28 does not resolve a stage named by an
# argument's default value.)
FROM scratch AS runtime
ENV PATH=/usr/local/bin \
    CL_DEVCHAIN_CMD=loopp-devchain \
    CL_MEDIAN_CMD=loopp-median \
    PLUGIN_UNIX_SOCKET_DIR=/tmp
USER 65532:65532
WORKDIR /var/lib/loopp
VOLUME /var/lib/loopp
EXPOSE 6688
ENTRYPOINT ["/usr/local/bin/loopp"]
# In its own network namespace the node must listen beyond loopback for the
# port to be published; publish it on the host's loopback (above).
CMD ["node", "run", "--http", "0.0.0.0:6688"]

# The same layout as the build stage's /out, made by scripts/image.sh from
# the host's build; `--target image-prebuilt` ships it.
FROM runtime AS image-prebuilt
COPY prebuilt/bin/ /usr/local/bin/
COPY --chown=65532:65532 prebuilt/data/ /var/lib/loopp/
COPY --chown=65532:65532 prebuilt/tmp/ /tmp/

# The default: the build stage's binary. The data dir (chain files, keys)
# and the plugins' socket dir belong to the user the node runs as; scratch
# has no /tmp of its own.
FROM runtime
COPY --from=build /out/bin/ /usr/local/bin/
COPY --from=build --chown=65532:65532 /out/data/ /var/lib/loopp/
COPY --from=build --chown=65532:65532 /out/tmp/ /tmp/
