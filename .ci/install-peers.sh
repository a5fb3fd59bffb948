#!/usr/bin/env bash
# Install the real SMTP peers that tests/peers.py and benches/load_server.py drive:
#   postfix      full MTA (run only as private loopback instances with `postfix -c DIR`),
#                plus smtp-sink / smtp-source / postqueue / postconf
#   swaks        scripted SMTP client (+ the Perl modules it needs for --tls and --auth)
#   sasl2-bin    saslpasswd2, to create the sasldb that Postfix's Cyrus SASL reads (AUTH tests)
#   libsasl2-modules, libsasl2-modules-db   the PLAIN/LOGIN mechanisms and the sasldb auxprop
#   postgresql   the relay's shared queue (initdb/pg_ctl run by the tests in temporary folders)
#   haproxy      the load balancer in front of relay nodes (run by the tests from a config file)
#
# Idempotent: when everything is already present it only verifies and exits.
# It never configures or starts the system Postfix: debconf gets "No configuration" (no
# /etc/postfix/main.cf, so nothing can listen on port 25), and while apt runs a
# policy-rc.d that refuses every service start is in place (saslauthd included).
set -euo pipefail

PACKAGES=(
    postfix
    swaks
    libio-socket-ssl-perl   # swaks --tls / STARTTLS
    libnet-ssleay-perl
    libauthen-sasl-perl     # swaks --auth beyond the built-in mechanisms
    sasl2-bin
    libsasl2-modules
    libsasl2-modules-db
    dnsmasq-base            # the relay tests' DNS server (MX, A, AAAA, null MX) on loopback
    postgresql              # the shared relay queue (tests/scaleout: own cluster, own port)
    haproxy                 # TCP load balancer with send-proxy-v2 in front of relay nodes
)

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo -n)
else
    echo "install-peers: need root (or passwordless sudo) to install: ${PACKAGES[*]}" >&2
    exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    # dpkg-query exits non-zero for unknown packages; "install ok installed" means present.
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [ "$status" != "install ok installed" ]; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-peers: installing ${missing[*]}"
    # Keep Postfix unconfigured: no main.cf, no daemon, port 25 stays free.
    echo "postfix postfix/main_mailer_type select No configuration" \
        | "${SUDO[@]}" debconf-set-selections
    # No system PostgreSQL cluster either: the tests make their own with initdb.
    if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
        "${SUDO[@]}" mkdir -p /etc/postgresql-common
        echo "create_main_cluster = false" \
            | "${SUDO[@]}" tee /etc/postgresql-common/createcluster.conf >/dev/null
    fi

    # Refuse service starts during the install unless the image already does so (Docker
    # images usually ship such a policy-rc.d; we remove only the one we created).
    created_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    cleanup() {
        if [ "$created_policy" -eq 1 ]; then
            "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d
        fi
    }
    trap cleanup EXIT

    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends "${missing[@]}"
fi

# Verify what the tests rely on, so a broken install fails here and not as a test skip.
for bin in /usr/sbin/postfix /usr/sbin/postconf /usr/sbin/postqueue /usr/sbin/smtp-sink \
           /usr/sbin/smtp-source /usr/bin/swaks /usr/sbin/saslpasswd2 /usr/sbin/dnsmasq \
           /usr/sbin/haproxy; do
    if [ ! -x "$bin" ]; then
        echo "install-peers: $bin missing after install" >&2
        exit 1
    fi
done
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "install-peers: PostgreSQL's initdb missing after install" >&2
    exit 1
fi
if ! id -u postgres >/dev/null 2>&1; then
    echo "install-peers: no 'postgres' user to run the test clusters as" >&2
    exit 1
fi
# postconf needs a config directory even for defaults; an empty one is enough, and it keeps
# us from depending on (or creating) /etc/postfix/main.cf.
emptycf=$(mktemp -d)
pf_version=$(/usr/sbin/postconf -c "$emptycf" -dh mail_version 2>/dev/null || true)
pf_sasl=$(/usr/sbin/postconf -c "$emptycf" -a 2>/dev/null || true)
rmdir "$emptycf"
if [ -z "$pf_version" ]; then
    echo "install-peers: postconf does not run" >&2
    exit 1
fi
if ! grep -qx cyrus <<<"$pf_sasl"; then
    echo "install-peers: this postfix has no Cyrus SASL server support (postconf -a)" >&2
    exit 1
fi

# The system Postfix must not be running: our tests start private instances only.
if [ -e /etc/postfix/main.cf ]; then
    echo "install-peers: note: /etc/postfix/main.cf exists (system Postfix configured);" \
        "the tests do not use it" >&2
fi
if command -v ss >/dev/null 2>&1 && ss -ltnH 'sport = :25' 2>/dev/null | grep -q .; then
    echo "install-peers: warning: something listens on port 25 (not started by this script)" >&2
fi

echo "install-peers: ok (postfix $pf_version, swaks, saslpasswd2, dnsmasq, postgresql, haproxy)"
