package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/snapsafe/snapsafe/runtime/api"
	"github.com/snapsafe/snapsafe/runtime/provider/hostapi"
)

// The guest's host endpoint: snapsafed --host-listen on guestPort, with the
// bearer token of guestTokenFile for restores.
const (
	guestTokenFile = "etc/snapsafe/host-token"
	// hostWaitTimeout is the timeout the host gives GET /v1/wait.
	hostWaitTimeout = 30 * time.Second
)

// endpoint is the host's client of one VM's host endpoint, through the
// port of the host's loopback that QEMU forwards to the guest.
type endpoint struct {
	vm     string
	base   string // http://127.0.0.1:PORT
	client *http.Client
}

func newEndpoint(vm string, port int) *endpoint {
	return &endpoint{
		vm:   vm,
		base: "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		client: &http.Client{
			// A connection per request: none outlives a snapshot, and a
			// clone's first request opens a new one through its own
			// forward. No proxy: the endpoint is on the loopback.
			Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
			// Past the longest wait the host asks for.
			Timeout: hostWaitTimeout + 10*time.Second,
		},
	}
}

// status is GET /v1/status.
func (e *endpoint) status(ctx context.Context) (api.Status, error) {
	var st api.Status
	code, err := e.do(ctx, http.MethodGet, "/v1/status", "", nil, &st)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("%s: GET /v1/status: HTTP %d", e.vm, code)
	}
	return st, err
}

// waitStatus polls GET /v1/status until it answers: the provider serves the
// endpoint once it is ready.
func (e *endpoint) waitStatus(ctx context.Context) (api.Status, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := e.status(rctx)
		cancel()
		if err == nil {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("%s: the host endpoint %s does not answer: %w (last error: %v)", e.vm, e.base, ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// wait is GET /v1/wait?after=N&timeout=D: 200 once the generation is above
// after and every tracked watcher adapted, 504 at the timeout.
func (e *endpoint) wait(ctx context.Context, after uint64, timeout time.Duration) (int, hostapi.WaitResponse, error) {
	var r hostapi.WaitResponse
	q := url.Values{"after": {strconv.FormatUint(after, 10)}, "timeout": {timeout.String()}}
	code, err := e.do(ctx, http.MethodGet, "/v1/wait?"+q.Encode(), "", nil, &r)
	return code, r, err
}

// restore is POST /v1/restore with the token and the entropy.
func (e *endpoint) restore(ctx context.Context, token string, entropy []byte) (int, hostapi.RestoreResponse, error) {
	var r hostapi.RestoreResponse
	body, err := json.Marshal(hostapi.RestoreRequest{Entropy: base64.StdEncoding.EncodeToString(entropy)})
	if err != nil {
		return 0, r, err
	}
	code, err := e.do(ctx, http.MethodPost, "/v1/restore", token, body, &r)
	return code, r, err
}

// do sends one request and decodes the JSON answer into v when it is a 2xx
// or has the fields of v (a 504 wait, a 500 restore); other error bodies,
// {"error": ...}, become the error.
func (e *endpoint) do(ctx context.Context, method, path, token string, body []byte, v any) (int, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.base+path, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s: %s %s: %w", e.vm, method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s: %s %s: HTTP %d, reading the body: %w", e.vm, method, path, resp.StatusCode, err)
	}
	if err := decodeAnswer(resp.StatusCode, data, v); err != nil {
		return resp.StatusCode, fmt.Errorf("%s: %s %s: %w", e.vm, method, path, err)
	}
	return resp.StatusCode, nil
}

// decodeAnswer decodes an endpoint's answer into v. The endpoint answers a
// failed wait or restore with the fields of v too; a refused or malformed
// request gets {"error": "..."}, which becomes the error.
func decodeAnswer(code int, data []byte, v any) error {
	var e struct {
		Error string `json:"error"`
	}
	if code/100 != 2 && json.Unmarshal(data, &e) == nil && e.Error != "" {
		return &answerError{code: code, msg: e.Error}
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("HTTP %d with a body that is not the expected JSON (%v): %.200q", code, err, data)
	}
	return nil
}

// answerError is an endpoint's refusal: its status code and its message.
type answerError struct {
	code int
	msg  string
}

func (e *answerError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.code, e.msg) }
