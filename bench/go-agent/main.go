// go-agent: many ServiceRadar agents in one grpc-go process, for the benches.
//
//	go-agent SPEC.json
//
// SPEC.json is bench.agents_server's: {"client_ca": "root.pem",
// "agents": [{"chain": "a-chain.pem", "key": "a-key.pem"}, ...]}. Every agent
// gets its own 127.0.0.1 port serving its own certificate (mTLS: the client
// must chain to client_ca); the ports are printed as one JSON line on stdout,
// {"ports": [...], "bind_seconds": ..., "rss_mib": ..., "server": "grpc-go"}, then
// it serves until SIGTERM/SIGINT, or until its parent (the benchmark) is gone.
//
// It answers what the poller asks every cycle, like bench.agents_server:
// grpc.health.v1 Health/Check (SERVING) and monitoring.AgentService/GetStatus
// (available, message {"status":"ok"}, the request's names echoed), plus
// GetResults (available, empty data). No generated code: the services are
// registered by hand with a raw-bytes codec and the few fields are read and
// written with protowire, which is all a benchmark agent needs.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io/ioutil"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/encoding/protowire"
)

type spec struct {
	ClientCA string `json:"client_ca"`
	Agents   []struct {
		Chain string `json:"chain"`
		Key   string `json:"key"`
	} `json:"agents"`
}

// frame is a message's wire bytes, passed through by rawCodec untouched.
type frame struct{ b []byte }

type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) {
	f, ok := v.(*frame)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return f.b, nil
}

func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	f, ok := v.(*frame)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	f.b = append(f.b[:0], data...)
	return nil
}

// Named "proto": what clients send as content-subtype (none), so this
// replaces grpc-go's default codec in this program.
func (rawCodec) Name() string { return "proto" }

// StatusRequest: service_name=1, service_type=2, agent_id=3, poller_id=4 (strings).
func requestNames(b []byte) (fields [5][]byte) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return
		}
		b = b[n:]
		if typ == protowire.BytesType && num >= 1 && num <= 4 {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return
			}
			fields[num] = v
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return
		}
		b = b[m:]
	}
	return
}

var statusMessage = []byte(`{"status":"ok"}`)

// StatusResponse: available=1 (bool), message=2 (bytes), service_name=3,
// service_type=4, response_time=5 (int64), agent_id=6, poller_id=7.
func statusResponse(req []byte) []byte {
	f := requestNames(req)
	out := make([]byte, 0, 96)
	out = protowire.AppendTag(out, 1, protowire.VarintType)
	out = protowire.AppendVarint(out, 1)
	out = protowire.AppendTag(out, 2, protowire.BytesType)
	out = protowire.AppendBytes(out, statusMessage)
	for i, field := range [][]byte{f[1], f[2]} {
		if len(field) > 0 {
			out = protowire.AppendTag(out, protowire.Number(3+i), protowire.BytesType)
			out = protowire.AppendBytes(out, field)
		}
	}
	out = protowire.AppendTag(out, 5, protowire.VarintType)
	out = protowire.AppendVarint(out, 1_000_000)
	for i, field := range [][]byte{f[3], f[4]} {
		if len(field) > 0 {
			out = protowire.AppendTag(out, protowire.Number(6+i), protowire.BytesType)
			out = protowire.AppendBytes(out, field)
		}
	}
	return out
}

// ResultsResponse has StatusResponse's first seven fields with the same numbers
// and types (data=2 in place of message=2): the same bytes are a valid one.
func resultsResponse(req []byte) []byte { return statusResponse(req) }

func unary(respond func([]byte) []byte) func(interface{}, context.Context, func(interface{}) error, grpc.UnaryServerInterceptor) (interface{}, error) {
	return func(_ interface{}, _ context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
		in := &frame{}
		if err := dec(in); err != nil {
			return nil, err
		}
		return &frame{b: respond(in.b)}, nil
	}
}

func registerRawCodec() { encoding.RegisterCodec(rawCodec{}) }

var serving = []byte{0x08, 0x01} // HealthCheckResponse{status: SERVING}

func main() {
	if len(os.Args) == 3 && os.Args[1] == "client" {
		watchParent()
		raiseNofile()
		runClient(os.Args[2])
		return
	}
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go-agent SPEC.json | go-agent client SIDE-SPEC.json")
		os.Exit(2)
	}
	watchParent()
	raiseNofile()
	raw, err := ioutil.ReadFile(os.Args[1])
	die(err)
	var s spec
	die(json.Unmarshal(raw, &s))
	caPEM, err := ioutil.ReadFile(s.ClientCA)
	die(err)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		die(fmt.Errorf("no certificate in %s", s.ClientCA))
	}
	registerRawCodec()

	started := time.Now()
	var mu sync.RWMutex
	certByPort := map[int]*tls.Certificate{}
	getCert := func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		port := hello.Conn.LocalAddr().(*net.TCPAddr).Port
		mu.RLock()
		defer mu.RUnlock()
		if c, ok := certByPort[port]; ok {
			return c, nil
		}
		return nil, fmt.Errorf("no agent on port %d", port)
	}
	config := &tls.Config{
		GetCertificate: getCert,
		ClientCAs:      pool,
		ClientAuth:     tls.RequireAndVerifyClientCert,
		NextProtos:     []string{"h2"},
		MinVersion:     tls.VersionTLS12,
	}
	// No credentials on the server: each listener is a TLS listener, so gRPC
	// sees plain connections that are already mTLS (the per-port certificate
	// needs GetCertificate, which grpc-go's credentials would also allow, but
	// this keeps the server one object for every port).
	server := grpc.NewServer()
	server.RegisterService(&grpc.ServiceDesc{
		ServiceName: "monitoring.AgentService",
		HandlerType: (*interface{})(nil),
		Methods: []grpc.MethodDesc{
			{MethodName: "GetStatus", Handler: unary(statusResponse)},
			{MethodName: "GetResults", Handler: unary(resultsResponse)},
		},
		Metadata: "monitoring.proto",
	}, struct{}{})
	server.RegisterService(&grpc.ServiceDesc{
		ServiceName: "grpc.health.v1.Health",
		HandlerType: (*interface{})(nil),
		Methods: []grpc.MethodDesc{
			{MethodName: "Check", Handler: unary(func([]byte) []byte { return serving })},
		},
		Metadata: "health.proto",
	}, struct{}{})

	ports := make([]int, 0, len(s.Agents))
	var listeners []net.Listener
	for _, a := range s.Agents {
		cert, err := tls.LoadX509KeyPair(a.Chain, a.Key)
		die(err)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			die(fmt.Errorf("could not bind a port for %s (after %d ports): %v", a.Chain, len(ports), err))
		}
		port := l.Addr().(*net.TCPAddr).Port
		c := cert
		mu.Lock()
		certByPort[port] = &c
		mu.Unlock()
		ports = append(ports, port)
		listeners = append(listeners, tls.NewListener(l, config))
	}
	for _, l := range listeners {
		go server.Serve(l)
	}
	line, _ := json.Marshal(map[string]interface{}{
		"ports":        ports,
		"bind_seconds": float64(time.Since(started).Milliseconds()) / 1000,
		"rss_mib":      rssMiB(),
		"server":       "grpc-go",
	})
	os.Stdout.Write(append(line, '\n'))

	done := make(chan os.Signal, 1)
	signal.Notify(done, syscall.SIGTERM, syscall.SIGINT)
	<-done
	server.Stop()
}

// Exit with the benchmark process, even when it is SIGKILLed: Go cannot
// rely on PR_SET_PDEATHSIG (it is per thread), so watch the parent instead.
func watchParent() {
	parent := os.Getppid()
	go func() {
		for range time.Tick(500 * time.Millisecond) {
			if os.Getppid() != parent {
				os.Exit(1)
			}
		}
	}()
}

func raiseNofile() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}

func rssMiB() float64 {
	raw, err := ioutil.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kib, _ := strconv.Atoi(strings.Fields(line)[1])
			return float64(kib) / 1024
		}
	}
	return 0
}

func die(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-agent:", err)
		os.Exit(1)
	}
}
