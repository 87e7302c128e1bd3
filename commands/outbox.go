package commands

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Message is what the ledger sends a person: an e-mail now, an SMS or a
// code shown in the car later. Code and Link carry the secret the person
// needs; messages are never written to the database or logs.
type Message struct {
	Channel   string    `json:"channel"` // email, sms, vehicle
	To        string    `json:"to"`
	Subject   string    `json:"subject,omitempty"`
	Body      string    `json:"body"`
	Code      string    `json:"code,omitempty"`
	Link      string    `json:"link,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
}

// Outbox delivers messages. Commands call Send only after their events are
// committed; Send must not block on delivery (adapters queue and retry), and
// a failure to deliver never undoes the command.
type Outbox interface {
	Send(ctx context.Context, m Message)
}

// DiscardOutbox drops every message.
type DiscardOutbox struct{}

func (DiscardOutbox) Send(context.Context, Message) {}

// MemoryOutbox keeps the last messages in memory for GET /v1/dev/outbox. It
// exists only in dev mode.
type MemoryOutbox struct {
	mu   sync.Mutex
	msgs []Message
	max  int
}

// NewMemoryOutbox keeps at most max messages (oldest dropped first).
func NewMemoryOutbox(max int) *MemoryOutbox { return &MemoryOutbox{max: max} }

func (o *MemoryOutbox) Send(_ context.Context, m Message) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.msgs = append(o.msgs, m)
	if len(o.msgs) > o.max {
		o.msgs = o.msgs[len(o.msgs)-o.max:]
	}
}

// List returns the messages sent to `to` (all when empty), newest first.
func (o *MemoryOutbox) List(to string) []Message {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := []Message{}
	for i := len(o.msgs) - 1; i >= 0; i-- {
		if to == "" || o.msgs[i].To == to {
			out = append(out, o.msgs[i])
		}
	}
	return out
}

// Forgetter is an outbox that keeps messages and can drop those sent to
// addresses that were erased.
type Forgetter interface {
	Forget(to ...string)
}

// Forget drops the messages sent to any of the addresses.
func (o *MemoryOutbox) Forget(to ...string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	kept := o.msgs[:0]
	for _, m := range o.msgs {
		if !slices.Contains(to, m.To) {
			kept = append(kept, m)
		}
	}
	clear(o.msgs[len(kept):])
	o.msgs = kept
}

// Forget forwards to every outbox that keeps messages.
func (os Outboxes) Forget(to ...string) {
	for _, o := range os {
		if f, ok := o.(Forgetter); ok {
			f.Forget(to...)
		}
	}
}

// Outboxes sends every message to each outbox.
type Outboxes []Outbox

func (os Outboxes) Send(ctx context.Context, m Message) {
	for _, o := range os {
		o.Send(ctx, m)
	}
}
