package main

import (
	"net"
	"os"
)

// sdNotify tells a service manager about the provider's state through
// $NOTIFY_SOCKET (the systemd notify protocol: Type=notify units), and does
// nothing when the variable is unset. "READY=1" is sent only once the
// start-up bump is published and the control socket accepts clients, so
// that units ordered after snapsafed start against a usable page.
func sdNotify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
