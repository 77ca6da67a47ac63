#!/usr/bin/env bash
# Make a small private CA, the broker's certificate and one certificate per device (openssl CLI).
#
#   make-certs.sh DIR ca                                   DIR/ca.crt, DIR/ca.key (keep the key offline)
#   make-certs.sh DIR server NAME [NAME...] [--days N]     DIR/server.crt, DIR/server.key;
#                                                          NAMEs: host names or IP addresses clients dial
#   make-certs.sh DIR device DEVICE_ID [--days N]          DIR/DEVICE_ID.crt, DIR/DEVICE_ID.key;
#                                                          CN=DEVICE_ID, the MQTT username under
#                                                          use_identity_as_username
#
# server and device are signed with DIR/ca.key: give them the CA's DIR. Keys are ECDSA P-256.
# --days defaults to 825 (3650 for the CA); a negative value makes an already expired certificate
# (for testing; an expired CA needs OpenSSL 3.4 or newer: 3.0 refuses it).
set -euo pipefail

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

[ $# -ge 2 ] || usage
dir=$1
kind=$2
shift 2
days=825
names=()
while [ $# -gt 0 ]; do
    case $1 in
        --days) [ $# -ge 2 ] || usage; days=$2; shift 2 ;;
        -*) usage ;;
        *) names+=("$1"); shift ;;
    esac
done

# Server and device certificates are signed with the CA in the same DIR.
if [ "$kind" != ca ] && { [ ! -f "$dir/ca.crt" ] || [ ! -f "$dir/ca.key" ]; }; then
    echo "$dir/ca.crt and $dir/ca.key are needed to sign: make the CA there first ($0 $dir ca)" >&2
    exit 2
fi
mkdir -p "$dir"
umask 077
ext=$(mktemp)
trap 'rm -f "$ext" "$dir"/*.csr' EXIT

new_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

# The validity options for $days, for `openssl $1` (req or x509). OpenSSL 3.4 and newer (Debian 13)
# refuse a negative -days ("end date before start date") but take explicit dates, which 3.0
# (Debian 12) does not know. Its help text is read whole: grep -q would cut it short, a failure
# under pipefail.
validity() {
    local help
    help=$(openssl "$1" -help 2>&1 || true)
    if [ "$days" -lt 0 ] && [[ $help == *-not_after* ]]; then
        echo -not_before "$(date -u -d "$((days * 2)) days" +%Y%m%d%H%M%SZ)" \
            -not_after "$(date -u -d "$days days" +%Y%m%d%H%M%SZ)"
    else
        echo -days "$days"
    fi
}

sign() {  # sign NAME CN: a CSR for DIR/NAME.key, signed by the CA with the extensions in $ext
    openssl req -new -key "$dir/$1.key" -subj "/CN=$2" -out "$dir/$1.csr"
    local out
    # shellcheck disable=SC2046 # validity's words are separate options
    out=$(openssl x509 -req -in "$dir/$1.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
        $(validity x509) -sha256 -extfile "$ext" -out "$dir/$1.crt" 2>&1) || { echo "$out" >&2; exit 1; }
    chmod 644 "$dir/$1.crt"
    echo "$dir/$1.crt $dir/$1.key (CN=$2, $days days)"
}

case $kind in
    ca)
        [ ${#names[@]} -eq 0 ] || usage
        [ "$days" != 825 ] || days=3650
        new_key "$dir/ca.key"
        # shellcheck disable=SC2046 # validity's words are separate options
        openssl req -x509 -new -key "$dir/ca.key" -subj "/CN=edge-agent MQTT CA" $(validity req) -sha256 \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -out "$dir/ca.crt"
        chmod 644 "$dir/ca.crt"
        echo "$dir/ca.crt $dir/ca.key"
        ;;
    server)
        [ ${#names[@]} -ge 1 ] || usage
        san=""
        for name in "${names[@]}"; do
            if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then entry="IP:$name"; else entry="DNS:$name"; fi
            san="${san:+$san,}$entry"
        done
        printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$san" >"$ext"
        new_key "$dir/server.key"
        sign server "${names[0]}"
        ;;
    device)
        [ ${#names[@]} -eq 1 ] || usage
        device=${names[0]}
        [[ $device =~ ^[A-Za-z0-9_-]{1,64}$ ]] || { echo "device id must match [A-Za-z0-9_-]{1,64}" >&2; exit 2; }
        printf 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n' >"$ext"
        new_key "$dir/$device.key"
        sign "$device" "$device"
        ;;
    *) usage ;;
esac
