#!/bin/sh
# Installs what the end-to-end clone test (go run ./e2e/cmd/clonetest) needs
# on Debian 12 (bookworm): QEMU for x86 (it runs guests with TCG, no KVM
# needed), a static busybox for the guest, and a guest kernel with the
# vmgenid driver built in (Debian's 6.1). The guests' network needs nothing
# more: QEMU's user networking comes with qemu-system-x86 (libslirp0), the
# virtio_net module with the kernel's package, ip and xzcat with busybox.
#
#   e2e/install-deps.sh              installs what is missing
#   e2e/install-deps.sh --backports  also the 6.12 kernel of bookworm-backports,
#                                    adding that suite to apt's sources
#
# Idempotent: when everything is there it only checks, which takes a moment.
set -eu

backports=false
case "${1:-}" in
"") ;;
--backports) backports=true ;;
*)
	echo "usage: $0 [--backports]" >&2
	exit 2
	;;
esac

if [ "$(id -u)" != 0 ]; then
	echo "$0: run as root (it installs packages with apt-get)" >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# apt-get update once, and only when something is to be installed.
updated=false
update() {
	if ! $updated; then
		apt-get update -qq
		updated=true
	fi
}

missing=""
for p in qemu-system-x86 busybox-static linux-image-amd64; do
	installed "$p" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	update
	# Without recommends: QEMU's pull in display and audio stacks, the
	# kernel's firmware, none of which a headless TCG guest uses.
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
	echo "installed:$missing"
else
	echo "already installed: qemu-system-x86 busybox-static linux-image-amd64"
fi

if $backports; then
	src=/etc/apt/sources.list.d/bookworm-backports.sources
	if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
		cat >"$src" <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
		echo "added $src"
		updated=false
	fi
	case "$(dpkg-query -W -f='${Version}' linux-image-amd64)" in
	*bpo*) echo "already installed: linux-image-amd64 from bookworm-backports" ;;
	*)
		update
		apt-get install -y -qq --no-install-recommends -t bookworm-backports linux-image-amd64 >/dev/null
		echo "installed: linux-image-amd64 $(dpkg-query -W -f='${Version}' linux-image-amd64) from bookworm-backports"
		;;
	esac
fi

echo "guest kernels:" /boot/vmlinuz-*
