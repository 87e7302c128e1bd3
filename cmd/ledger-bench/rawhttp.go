package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
)

// rawClient is a load generator's HTTP/1.1 client, in the manner of wrk:
// one keep-alive connection, a request written from bytes prepared once,
// and an answer read only as far as its status, its length and a marker in
// its body. On two cores a net/http client with a JSON decoder costs about
// as much CPU per request as the server's whole answer, so a row that
// measures the server with it mostly measures the client; this one leaves
// the cores to the server. The server still parses every request as sent
// over a real socket.
type rawClient struct {
	conn net.Conn
	r    *bufio.Reader
	req  []byte
	body []byte
}

// newRawClient prepares POST path with a form body and HTTP Basic
// credentials, and dials the server of base.
func newRawClient(ctx context.Context, base, path, form, id, secret string) (*rawClient, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, err
	}
	basic := base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id) + ":" + url.QueryEscape(secret)))
	req := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Basic %s\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s",
		path, u.Host, basic, len(form), form)
	return &rawClient{conn: conn, r: bufio.NewReaderSize(conn, 4096), req: []byte(req), body: make([]byte, 0, 1024)}, nil
}

// do sends the request and reads the answer; it fails unless the status is
// 200 and the body holds want.
func (c *rawClient) do(want []byte) error {
	if _, err := c.conn.Write(c.req); err != nil {
		return err
	}
	status, length := 0, -1
	for first := true; ; first = false {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		if first {
			// HTTP/1.1 200 OK
			if len(line) < 12 {
				return fmt.Errorf("malformed status line %q", line)
			}
			status, _ = strconv.Atoi(string(line[9:12]))
			continue
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(name, []byte("Content-Length")) {
			length, _ = strconv.Atoi(string(bytes.TrimSpace(value)))
		}
	}
	if length < 0 {
		return fmt.Errorf("HTTP %d without a Content-Length", status)
	}
	if cap(c.body) < length {
		c.body = make([]byte, length)
	}
	c.body = c.body[:length]
	if _, err := io.ReadFull(c.r, c.body); err != nil {
		return err
	}
	if status != http.StatusOK || !bytes.Contains(c.body, want) {
		return fmt.Errorf("HTTP %d %s", status, c.body)
	}
	return nil
}

func (c *rawClient) Close() error { return c.conn.Close() }
