# Stand-in for rabbitmq:3.12-management from Debian 12's rabbitmq-server (3.10).
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends rabbitmq-server \
 && rm -rf /var/lib/apt/lists/* \
 && rabbitmq-plugins enable --offline rabbitmq_management \
 && printf 'loopback_users.guest = false\nlisteners.tcp.default = 5672\nmanagement.tcp.port = 15672\n' \
      > /etc/rabbitmq/rabbitmq.conf
EXPOSE 5672 15672
CMD ["rabbitmq-server"]
