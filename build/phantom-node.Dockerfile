# Image of phantom-node, the CSI node plugin. It holds the static binary and
# nothing else: no shell, no libc, no CA certificates (give OpenBao's CA with
# the chart value openbao.caCert).
#
# Build the binary first (CGO_ENABLED=0), then the image from the repository
# root:
#
#   make build
#   docker build -f build/phantom-node.Dockerfile -t phantom/phantom-node:TAG .
FROM scratch

LABEL org.opencontainers.image.title="phantom-node" \
      org.opencontainers.image.description="Phantom CSI node plugin: OpenBao secrets in pod tmpfs volumes" \
      org.opencontainers.image.source="https://github.com/phantom-sec/phantom"

COPY bin/phantom-node /usr/local/bin/phantom-node

# Root: the plugin mounts tmpfs volumes into pod directories and loads eBPF
# programs. The chart runs the container privileged for the same reasons.
USER 0:0

ENTRYPOINT ["/usr/local/bin/phantom-node"]
