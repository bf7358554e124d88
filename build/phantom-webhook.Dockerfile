# Image of phantom-webhook, the admission webhook. It holds the static binary
# and nothing else: no shell, no libc, no CA certificates (the webhook trusts
# the API server through its service account's CA file).
#
# Build the binary first (CGO_ENABLED=0), then the image from the repository
# root:
#
#   make build
#   docker build -f build/phantom-webhook.Dockerfile -t phantom/phantom-webhook:TAG .
FROM scratch

LABEL org.opencontainers.image.title="phantom-webhook" \
      org.opencontainers.image.description="Phantom admission webhook: adds the secrets volume to labeled pods" \
      org.opencontainers.image.source="https://github.com/phantom-sec/phantom"

COPY bin/phantom-webhook /usr/local/bin/phantom-webhook

# 65532 is the conventional "nonroot" user of static images. The chart sets
# the same user and requires runAsNonRoot.
USER 65532:65532

ENTRYPOINT ["/usr/local/bin/phantom-webhook"]
