package hostapi

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/mdlayher/vsock"
)

// listen opens one address: tcp:HOST:PORT, unix:PATH or vsock:PORT (any
// context id: the guest's own, so that the host reaches it through its VMM).
func listen(addr string) (net.Listener, error) {
	kind, rest, ok := strings.Cut(addr, ":")
	if !ok || rest == "" {
		return nil, fmt.Errorf("--host-listen %q: use tcp:HOST:PORT, unix:PATH or vsock:PORT", addr)
	}
	switch kind {
	case "tcp":
		ln, err := net.Listen("tcp", rest)
		if err != nil {
			return nil, fmt.Errorf("--host-listen %s: %w", addr, err)
		}
		return ln, nil
	case "unix":
		// A socket left by an earlier run is stale; anything else is not
		// ours to remove.
		if fi, err := os.Lstat(rest); err == nil && fi.Mode().Type() == os.ModeSocket {
			_ = os.Remove(rest)
		}
		ln, err := net.Listen("unix", rest)
		if err != nil {
			return nil, fmt.Errorf("--host-listen %s: %w", addr, err)
		}
		// The endpoint is for the host's side: the provider's user and its
		// group, not every local user.
		if err := os.Chmod(rest, 0o660); err != nil {
			ln.Close()
			return nil, fmt.Errorf("--host-listen %s: %w", addr, err)
		}
		return ln, nil
	case "vsock":
		port, err := strconv.ParseUint(rest, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("--host-listen %s: %q is not a vsock port number", addr, rest)
		}
		ln, err := vsock.Listen(uint32(port), nil)
		if err != nil {
			return nil, fmt.Errorf("--host-listen %s: %w (does this guest have a virtio-vsock device? modprobe vmw_vsock_virtio_transport)", addr, err)
		}
		return ln, nil
	}
	return nil, fmt.Errorf("--host-listen %q: unknown kind %q: use tcp:HOST:PORT, unix:PATH or vsock:PORT", addr, kind)
}

type peerKey struct{}

// withPeer records the connection's remote address for authorize.
func withPeer(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, peerKey{}, c.RemoteAddr())
}

// fromHost reports whether the request came over vsock from the host
// (context id 2): only the hypervisor can make such a connection.
//
// No test covers this rule: it needs a virtio-vsock device and a host
// peer, which the test machines lack; the bearer-token path beside it in
// authorize is tested over TCP (TestRestore).
func fromHost(ctx context.Context) bool {
	va, ok := ctx.Value(peerKey{}).(*vsock.Addr)
	return ok && va.ContextID == vsock.Host
}

func peerString(ctx context.Context) string {
	if a, ok := ctx.Value(peerKey{}).(net.Addr); ok && a != nil {
		return a.Network() + ":" + a.String()
	}
	return "?"
}
