// Package hostapi is the provider's host endpoint: HTTP/1.1 and JSON for
// the control plane outside the guest (docs/host-api.md).
//
//	GET  /v1/status               the status object of snapsafectl status --json
//	GET  /v1/wait?after=N&timeout=D  200 once the generation is above N and no
//	                              tracked watcher is outdated; 504 at the timeout
//	GET  /metrics                 Prometheus text, snapsafe_ families
//	POST /v1/restore              a host-pushed restore with fresh entropy;
//	                              only from the host over vsock (CID 2) or
//	                              with the bearer token of --host-token-file
//
// Everything is bounded — header time, request size, concurrent waits — and
// a handler takes the provider's lock only as long as a control-socket
// request does, so a slow or hostile HTTP peer never delays a bump or the
// control socket.
package hostapi

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/snapsafe/snapsafe/runtime/api"
	"github.com/snapsafe/snapsafe/runtime/provider"
)

// Bounds of the endpoint.
const (
	// MaxWaits bounds the waits in progress at once; more get 503.
	MaxWaits = 64
	// MaxWaitTimeout bounds a wait's timeout parameter; DefaultWaitTimeout
	// is used when it is absent.
	MaxWaitTimeout     = 10 * time.Minute
	DefaultWaitTimeout = 30 * time.Second
	// MaxBody bounds a request body (a restore's JSON).
	MaxBody = 64 << 10
	// headerTimeout bounds the time a peer may take to send its headers.
	headerTimeout = 5 * time.Second
)

// Provider is what the endpoint needs of the provider.
type Provider interface {
	StatusWithLists() api.Status
	WaitAdapted(ctx context.Context, after uint64) provider.Adapted
	Restore(ctx context.Context, entropy []byte) (gen uint64, reseeded bool, how string, err error)
}

// Config configures the endpoint.
type Config struct {
	// Listen are the addresses: tcp:HOST:PORT, unix:PATH or vsock:PORT.
	Listen []string
	// TokenFile, when set, holds the bearer token that lets a peer other
	// than the host over vsock push restores. It must be owned by root or
	// the provider's user and readable by nobody else.
	TokenFile string
	// Logger receives the endpoint's logs.
	Logger *slog.Logger
}

// Server is the host endpoint. Metrics must be passed to the provider
// (Config.OnAdapted = s.ObserveAdapt) before the provider runs.
type Server struct {
	cfg     Config
	log     *slog.Logger
	token   []byte // nil: no bearer token accepted
	lns     []net.Listener
	waits   chan struct{}
	metrics *metrics

	mu   sync.Mutex
	prov Provider
}

// New checks the configuration, reads the token and opens the listeners;
// Serve starts answering.
func New(cfg Config) (*Server, error) {
	s := &Server{cfg: cfg, log: cfg.Logger, waits: make(chan struct{}, MaxWaits), metrics: newMetrics()}
	if s.log == nil {
		s.log = slog.Default()
	}
	if cfg.TokenFile != "" {
		tok, err := readToken(cfg.TokenFile)
		if err != nil {
			return nil, err
		}
		s.token = tok
	}
	for _, addr := range cfg.Listen {
		ln, err := listen(addr)
		if err != nil {
			s.closeListeners()
			return nil, err
		}
		s.lns = append(s.lns, ln)
	}
	return s, nil
}

// ObserveAdapt records one bump's time until every tracked watcher adapted
// (snapsafe_adapt_seconds); pass it as provider.Config.OnAdapted.
func (s *Server) ObserveAdapt(d time.Duration) { s.metrics.adapt.Observe(d.Seconds()) }

// Addrs returns the listeners' addresses, in the order of Config.Listen.
func (s *Server) Addrs() []net.Addr {
	a := make([]net.Addr, len(s.lns))
	for i, ln := range s.lns {
		a[i] = ln.Addr()
	}
	return a
}

// Serve answers on every listener until ctx ends, then shuts down,
// letting requests in progress finish for a few seconds. Call it once the
// provider is ready.
func (s *Server) Serve(ctx context.Context, p Provider) error {
	s.mu.Lock()
	s.prov = p
	s.mu.Unlock()
	s.metrics.register(p)
	srv := &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: headerTimeout,
		ReadTimeout:       headerTimeout + 10*time.Second,
		WriteTimeout:      MaxWaitTimeout + time.Minute,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		ConnContext:       func(ctx context.Context, c net.Conn) context.Context { return withPeer(ctx, c) },
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, len(s.lns))
	for _, ln := range s.lns {
		go func() { errc <- srv.Serve(ln) }()
		s.log.Info("host endpoint listening", "addr", ln.Addr().Network()+":"+ln.Addr().String())
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("host endpoint: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx) // closes the listeners; waits end with ctx
	return err
}

func (s *Server) closeListeners() {
	for _, ln := range s.lns {
		ln.Close()
	}
}

func (s *Server) provider() Provider {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.prov
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", s.status)
	mux.HandleFunc("GET /v1/wait", s.wait)
	mux.HandleFunc("POST /v1/restore", s.restore)
	mux.Handle("GET /metrics", s.metrics.handler())
	return http.MaxBytesHandler(mux, MaxBody)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// apiError is the body of every 4xx/5xx: what was wrong and what to do.
type apiError struct {
	Error string `json:"error"`
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.provider().StatusWithLists())
}

// WaitResponse is the body of GET /v1/wait.
type WaitResponse struct {
	Generation uint64 `json:"generation"`
	Adapted    bool   `json:"adapted"`
	// WaitedSeconds is how long the endpoint waited.
	WaitedSeconds float64 `json:"waited_seconds"`
	// Outdated names the tracked watchers and hooks that had not adapted
	// at the timeout.
	Outdated []Outdated `json:"outdated,omitempty"`
}

// Outdated is one watcher or hook that holds up adaptation.
type Outdated struct {
	Label string `json:"label"`
	PID   int32  `json:"pid,omitempty"`
	Comm  string `json:"comm,omitempty"`
}

func (s *Server) wait(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var after uint64
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{fmt.Sprintf("after=%q is not a generation: pass the generation read before the restore (0 for any)", v)})
			return
		}
		after = n
	}
	timeout := DefaultWaitTimeout
	if v := q.Get("timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > MaxWaitTimeout {
			writeJSON(w, http.StatusBadRequest, apiError{fmt.Sprintf("timeout=%q: give a duration such as 30s, at most %v", v, MaxWaitTimeout)})
			return
		}
		timeout = d
	}
	select {
	case s.waits <- struct{}{}:
		defer func() { <-s.waits }()
	default:
		writeJSON(w, http.StatusServiceUnavailable, apiError{fmt.Sprintf("%d waits are in progress, the most this endpoint serves: retry later", MaxWaits)})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	p := s.provider()
	res := p.WaitAdapted(ctx, after)
	resp := WaitResponse{Generation: res.Generation, Adapted: res.Adapted, WaitedSeconds: res.Waited.Seconds()}
	if res.Adapted {
		writeJSON(w, http.StatusOK, resp)
		return
	}
	st := p.StatusWithLists()
	resp.Generation = st.Generation
	for _, wt := range st.WatcherList {
		if wt.Outdated && wt.Tracked {
			resp.Outdated = append(resp.Outdated, Outdated{Label: wt.Label, PID: wt.PID, Comm: wt.Comm})
		}
	}
	for _, h := range st.Hooks {
		if h.State != "ok" && h.State != "refused" {
			resp.Outdated = append(resp.Outdated, Outdated{Label: "hook:" + h.Name})
		}
	}
	writeJSON(w, http.StatusGatewayTimeout, resp)
}

// RestoreRequest is the body of POST /v1/restore.
type RestoreRequest struct {
	// Entropy is fresh randomness from the host, base64 (standard
	// encoding), at least 32 bytes decoded.
	Entropy string `json:"entropy"`
}

// RestoreResponse is the answer to POST /v1/restore: 200 only when the
// kernel RNG was reseeded for the new generation, 500 when the bump
// happened but the reseed did not (never "ok" after a failed reseed).
type RestoreResponse struct {
	OK             bool   `json:"ok"`
	Generation     uint64 `json:"generation"`
	KernelReseeded bool   `json:"kernel_reseeded"`
	KernelReseed   string `json:"kernel_reseed"`
}

func (s *Server) restore(w http.ResponseWriter, r *http.Request) {
	if why := s.authorize(r); why != "" {
		s.log.Warn("host restore refused", "peer", peerString(r.Context()), "why", why)
		writeJSON(w, http.StatusForbidden, apiError{why})
		return
	}
	var req RestoreRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeJSON(w, http.StatusRequestEntityTooLarge, apiError{fmt.Sprintf("the body is larger than %d bytes", MaxBody)})
			return
		}
		writeJSON(w, http.StatusBadRequest, apiError{`the body must be {"entropy": "<base64 of at least 32 random bytes>"}: ` + err.Error()})
		return
	}
	entropy, err := base64.StdEncoding.DecodeString(req.Entropy)
	if err != nil || len(entropy) < provider.MinHostEntropy {
		writeJSON(w, http.StatusBadRequest, apiError{fmt.Sprintf("entropy must be standard base64 of at least %d random bytes (got %d bytes)", provider.MinHostEntropy, len(entropy))})
		return
	}
	gen, reseeded, how, err := s.provider().Restore(r.Context(), entropy)
	clear(entropy)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, apiError{"the restore was not published: " + err.Error()})
		return
	}
	s.log.Info("host restore", "generation", gen, "peer", peerString(r.Context()), "kernel_reseeded", reseeded, "kernel_reseed", how)
	resp := RestoreResponse{OK: reseeded, Generation: gen, KernelReseeded: reseeded, KernelReseed: how}
	code := http.StatusOK
	if !reseeded {
		code = http.StatusInternalServerError
	}
	writeJSON(w, code, resp)
}

// authorize says why r may not push a restore, or "" when it may: from the
// host over vsock (peer CID 2), or with the bearer token.
func (s *Server) authorize(r *http.Request) string {
	if fromHost(r.Context()) {
		return ""
	}
	auth := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	switch {
	case s.token == nil:
		return "restores are accepted only from the host over vsock (no --host-token-file is set)"
	case !ok:
		return "a restore needs Authorization: Bearer <the token of --host-token-file>, or the host's vsock"
	case subtle.ConstantTimeCompare([]byte(tok), s.token) != 1:
		return "the bearer token does not match --host-token-file"
	}
	return ""
}
