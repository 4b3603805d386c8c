//go:build linux

package client_test

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"

	"github.com/snapsafe/snapsafe/runtime/client"
	"github.com/snapsafe/snapsafe/runtime/provider"
)

// A TLS server's session-ticket keys, new for every generation: clones of
// a VM must not share them (crypto/tls makes its automatic ticket keys
// once per process, so every clone would share those). The configuration
// is rebuilt once per generation and the Cached acknowledges the new
// generation as soon as it is rebuilt, so that the orchestrator's wait
// returns only once this server has new keys.
func ExampleCached() {
	dir, stop := startExampleProvider() // in production: snapsafed, and client.Attach("")
	defer stop()
	ctx := context.Background()
	c, err := client.Attach(dir)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	base := &tls.Config{MinVersion: tls.VersionTLS13}
	configs, err := client.NewCached(ctx, c, func(ctx context.Context, gen uint64) (*tls.Config, error) {
		var key [32]byte
		if _, err := rand.Read(key[:]); err != nil { // the kernel's generator: reseeded on VM fork
			return nil, err
		}
		cfg := base.Clone()
		cfg.SetSessionTicketKeys([][32]byte{key})
		fmt.Println("new session-ticket key for generation", gen)
		return cfg, nil
	})
	if err != nil {
		log.Fatal(err)
	}
	defer configs.Close()
	server := &tls.Config{
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			return configs.Get(hello.Context()) // one atomic load while the generation holds
		},
	}
	_ = server // tls.NewListener(ln, server)

	a, _ := configs.Get(ctx)
	b, _ := configs.Get(ctx)
	fmt.Println("same configuration until a restore:", a == b)

	// A restore (here forced, as snapsafectl bump does), then the
	// orchestrator's wait (snapsafectl wait): it returns once the Cached
	// has rebuilt and acknowledged, without any Get.
	if _, err := c.Bump(ctx, 0); err != nil {
		log.Fatal(err)
	}
	if err := c.Wait(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("orchestrator wait: adapted")
	d, _ := configs.Get(ctx)
	fmt.Println("new configuration after the restore:", d != a)
	// Output:
	// new session-ticket key for generation 1
	// same configuration until a restore: true
	// new session-ticket key for generation 2
	// orchestrator wait: adapted
	// new configuration after the restore: true
}

// An HMAC key kept in a wipe region, which the provider zeroes on every
// restore: the key never leaves the region through the API, and a tag
// computed while a restore landed is discarded and computed again.
func ExampleCachedSecret() {
	dir, stop := startExampleProvider() // in production: snapsafed, and client.Attach("")
	defer stop()
	ctx := context.Background()
	c, err := client.Attach(dir)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	key, err := client.NewCachedSecret(ctx, c, 32, func(ctx context.Context, gen uint64, secret []byte) error {
		_, err := rand.Read(secret)
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
	defer key.Close()
	sign := func(msg []byte) ([]byte, error) {
		for {
			var tag []byte
			err := key.Use(ctx, func(secret []byte) error {
				m := hmac.New(sha256.New, secret)
				m.Write(msg)
				tag = m.Sum(nil)
				return nil
			})
			if !errors.Is(err, client.ErrNewGeneration) {
				return tag, err
			}
			// A restore landed while the key was in use: drop the tag.
		}
	}

	t1, _ := sign([]byte("hello"))
	t2, _ := sign([]byte("hello"))
	fmt.Println("same tag within a generation:", hmac.Equal(t1, t2))
	if _, err := c.Bump(ctx, 0); err != nil { // a restore
		log.Fatal(err)
	}
	t3, _ := sign([]byte("hello"))
	fmt.Println("new key after the restore:", !hmac.Equal(t1, t3))
	// Output:
	// same tag within a generation: true
	// new key after the restore: true
}

// startExampleProvider runs a provider in this process on a new state
// directory, as snapsafed would, and returns the directory and a function
// that stops it.
func startExampleProvider() (dir string, stop func()) {
	dir, err := os.MkdirTemp("", "snapsafe-example-")
	if err != nil {
		log.Fatal(err)
	}
	p, err := provider.New(provider.Config{Dir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	select {
	case <-p.Ready():
	case err := <-done:
		log.Fatal(err)
	}
	return dir, func() {
		cancel()
		<-done
		os.RemoveAll(dir)
	}
}
