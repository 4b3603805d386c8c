package provider

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/snapsafe/snapsafe/backend"
	"github.com/snapsafe/snapsafe/runtime/internal/wire"
	"github.com/snapsafe/snapsafe/shm"
)

// refuse answers a protocol violation; the caller then closes the connection.
func (p *Provider) refuse(c *peer, id uint32, code wire.Code, text string) {
	p.log.Warn("closing a misbehaving client", "pid", c.pid, "uid", c.uid, "err", text)
	p.send(c, wire.EncodeError(id, code, text), nil)
}

// handle answers one request other than ack (which its reactor answers:
// answerAck); false closes the connection.
func (p *Provider) handle(c *peer, m wire.Message) bool {
	reply := func(t wire.Type, payload []byte) bool { return p.send(c, wire.Encode(t, m.ID, payload), nil) }
	fail := func(code wire.Code, text string) bool { return p.send(c, wire.EncodeError(m.ID, code, text), nil) }
	switch m.Type {
	case wire.Status:
		b, err := json.Marshal(p.Status())
		if err != nil {
			return fail(wire.CodeInternal, "encoding status: "+err.Error())
		}
		return reply(wire.StatusOK, b)
	case wire.Lists:
		b, err := json.Marshal(p.lists())
		if err != nil {
			return fail(wire.CodeInternal, "encoding lists: "+err.Error())
		}
		f, err := shm.SealedFile("snapsafe-lists", b)
		if err != nil {
			p.log.Error("passing the watcher list", "err", err)
			return fail(wire.CodeInternal, "could not pass the watcher list: see the provider's log")
		}
		defer f.Close()
		return p.send(c, wire.Encode(wire.ListsOK, m.ID, wire.U32(uint32(len(b)))), wire.Rights(f))
	case wire.Watch:
		seen, label, err := wire.DecodeWatch(m)
		if err != nil {
			return fail(wire.CodeInvalid, err.Error())
		}
		return reply(wire.WatchOK, wire.U64(p.watch(c, seen, label)))
	case wire.Wait:
		if code, text := p.wait(c, m.ID, m.U64()); code != 0 {
			return fail(code, text)
		}
		return true // the reply comes when the wait ends
	case wire.Cancel:
		p.cancelWait(c)
		return true
	case wire.Bump:
		if !c.mayBmp {
			p.log.Warn("bump refused", "pid", c.pid, "uid", c.uid)
			return fail(wire.CodeNotPermitted, "forcing a bump needs root, the provider's user, CAP_CHECKPOINT_RESTORE or membership of the provider's --bump-group")
		}
		gen, err := p.Bump(shm.ReasonForced, m.U64())
		if errors.Is(err, ErrInvalid) {
			return fail(wire.CodeInvalid, err.Error())
		}
		if err != nil {
			return fail(wire.CodeInternal, err.Error())
		}
		p.log.Info("forced bump", "generation", gen, "min", m.U64(), "pid", c.pid, "uid", c.uid)
		return reply(wire.BumpOK, wire.U64(gen))
	case wire.Region:
		f, code, text := p.newRegion(c, m.U32())
		if code != 0 {
			return fail(code, text)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return fail(wire.CodeInternal, "wipe region: "+err.Error())
		}
		return p.send(c, wire.Encode(wire.RegionOK, m.ID, wire.U32(uint32(fi.Size()))), wire.Rights(f))
	case wire.Page:
		f, err := p.page.Dup()
		if err != nil {
			p.log.Error("passing the generation page", "err", err)
			return fail(wire.CodeInternal, "could not pass the generation page: see the provider's log")
		}
		defer f.Close()
		return p.send(c, wire.Encode(wire.PageOK, m.ID, wire.U32(shm.PageSize)), wire.Rights(f))
	case wire.VMClock:
		f := backend.DeviceFile(p.source)
		if f == nil {
			return fail(wire.CodeUnavailable, fmt.Sprintf("the provider's %s backend has no VMClock device to pass", p.source.Name()))
		}
		return p.send(c, wire.Encode(wire.VMClockOK, m.ID, nil), wire.Rights(f))
	}
	// A reply or event type sent to the provider.
	p.refuse(c, m.ID, wire.CodeUnknown, fmt.Sprintf("message type %#x is not a request", uint8(m.Type)))
	return false
}
