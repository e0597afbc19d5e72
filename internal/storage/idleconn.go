package storage

import (
	"context"
	"net"
	"time"
)

// IdleTimeoutDialer returns a DialContext for the HTTP transports of
// object-store backends whose connections fail a Read or Write that moves
// no byte for idle (a hung server, a half-open TCP connection), however
// long the request as a whole takes. The backend's error is then retryable
// and Wrap tries again; without it a stalled upload could block forever.
// Every byte moved either way extends both directions, so an upload whose
// answer only comes at the end does not time out while it is sending.
func IdleTimeoutDialer(d *net.Dialer, idle time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if idle <= 0 {
		idle = DefaultStall
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		ic := &idleConn{Conn: c, idle: idle}
		ic.extend()
		return ic, nil
	}
}

type idleConn struct {
	net.Conn
	idle time.Duration
}

func (c *idleConn) extend() { _ = c.Conn.SetDeadline(time.Now().Add(c.idle)) }

func (c *idleConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.extend()
	}
	return n, err
}

func (c *idleConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.extend()
	}
	return n, err
}
