/* global TextDecoderStream */
// Server-Sent Events framing read from a fetch() body: EventSource cannot send the Authorization header, fetch can.

/**
 * Reads `body` until it ends or `isOpen()` turns false, calling `onEvent(type, data)` per event (data parsed as JSON),
 * `onId(id)` per `id:` line and `onRetry(ms)` per `retry:` line. Comment lines (keep-alives) are skipped.
 */
export async function readEventStream(body, { isOpen, onEvent, onId, onRetry }) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let event = { type: '', data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done || !isOpen()) return;
    buffer += value;
    let newline;
    while ((newline = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, newline).replace(/\r$/, '');
      buffer = buffer.slice(newline + 1);
      if (line === '') {
        if (event.data.length > 0) onEvent(event.type, JSON.parse(event.data.join('\n')));
        event = { type: '', data: [] };
        continue;
      }
      const colon = line.indexOf(':');
      if (colon === 0) continue;
      const field = colon < 0 ? line : line.slice(0, colon);
      const fieldValue = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') event.type = fieldValue;
      else if (field === 'data') event.data.push(fieldValue);
      else if (field === 'id') onId(fieldValue);
      else if (field === 'retry' && /^\d+$/.test(fieldValue)) onRetry(Number(fieldValue));
    }
  }
}
