# Sourced by the timely scripts. pick_ports FILE: writes a timely host file of two 127.0.0.1 addresses on
# consecutive ports and sets `base` to the first. The ports are drawn below the kernel's ephemeral range:
# a port there can be held by any outgoing connection (CI failed once with "Address already in use" on a
# port drawn in 20000-40000).
pick_ports() {
  local lo=32768 hi
  read -r lo hi </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  [ "$lo" -gt 12000 ] || lo=32768
  base=$((10000 + RANDOM % (lo - 10002)))
  printf '127.0.0.1:%d\n127.0.0.1:%d\n' "$base" $((base + 1)) >"$1"
}
