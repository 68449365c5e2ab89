#!/bin/sh
# How many calls per second the front door (deploy/kamailio/kamailio.cfg)
# relays: the same network as tests/cluster.rs (one namespace per host on a
# bridged segment), sipp answering as three bridges, and a sipp caller
# placing short calls (INVITE, 200, ACK, BYE, no media) through the front
# door to room 1000 at RATE calls per second for SECONDS. Prints the
# caller's totals: every call must succeed. Needs root, kamailio, sipp.
#
# usage: scripts/frontdoor-bench.sh RATE [SECONDS]
set -eu

rate=${1:?usage: frontdoor-bench.sh RATE [SECONDS]}
seconds=${2:-10}
cfg=$(cd "$(dirname "$0")/.." && pwd)/deploy/kamailio/kamailio.cfg
p=fdb$$
dir=$(mktemp -d)
hosts="frontdoor bridge1 bridge2 bridge3 phones"

cleanup() {
    for pid in $(cat "$dir"/*.pid 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
    sleep 1
    for h in hub $hosts; do ip netns del "$p-$h" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM
[ -n "${KEEP:-}" ] && trap - EXIT

ip netns add "$p-hub"
ip -n "$p-hub" link add seg type bridge
ip -n "$p-hub" link set seg type bridge forward_delay 0
ip -n "$p-hub" link set seg up
i=1
for h in $hosts; do
    ip netns add "$p-$h"
    ip -n "$p-hub" link add "p$i" type veth peer name eth0 netns "$p-$h"
    ip -n "$p-hub" link set "p$i" master seg up
    ip -n "$p-$h" addr add "10.0.0.$i/24" dev eth0
    ip -n "$p-$h" link set eth0 up
    ip -n "$p-$h" link set lo up
    i=$((i + 1))
done

: > "$dir/dispatcher.list"
for n in 2 3 4; do
    echo "1 sip:10.0.0.$n:5060 8" >> "$dir/dispatcher.list"
    ip netns exec "$p-bridge$((n - 1))" sipp -sf "$(dirname "$cfg")/../../scripts/frontdoor-uas.xml" -i "10.0.0.$n" -p 5060 -aa -nostdin \
        > /dev/null 2>&1 &
    echo $! > "$dir/uas$n.pid"
done

ip netns exec "$p-frontdoor" kamailio -f "$cfg" -A 'LISTEN=udp:10.0.0.1:5060' \
    -A "DISPATCHER_LIST=\"$dir/dispatcher.list\"" -A PROBE_INTERVAL_S=1 \
    -DD -E -w "$dir" -Y "$dir" 2> "$dir/kamailio.log" &
echo $! > "$dir/kamailio.pid"
sleep 3

calls=$((rate * seconds))
ip netns exec "$p-phones" sipp -sf "$(dirname "$cfg")/../../scripts/frontdoor-uac.xml" -i 10.0.0.5 -p 5070 -s 1000 10.0.0.1:5060 -r "$rate" -m "$calls" -d 0 -l 2000 \
    -timeout "$((seconds * 3))" -timeout_error -nostdin -trace_stat -stf "$dir/stat.csv" \
    > "$dir/uac.out" 2>&1 || true
echo "offered $rate calls/s, $calls calls"
head -n 1 "$dir/stat.csv" | tr ';' '\n' > "$dir/names"
tail -n 1 "$dir/stat.csv" | tr ';' '\n' > "$dir/values"
paste "$dir/names" "$dir/values" | grep -E '^(ElapsedTime\(C\)|SuccessfulCall\(C\)|FailedCall\(C\)|Retransmissions\(C\)|CallRate\(C\))\s'
