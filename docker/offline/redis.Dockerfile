# Stand-in for redis:7 from Debian 12's redis-server (7.0).
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server redis-tools \
 && rm -rf /var/lib/apt/lists/*
EXPOSE 6379
# As the official image does without a config file: listen everywhere, protected mode off.
ENTRYPOINT ["sh", "-c", "exec \"$@\" --bind 0.0.0.0 --protected-mode no", "redis"]
CMD ["redis-server"]
