/** One Server-Sent Events message: `event:`, `data:` lines joined, the `id:` it carried. */
export interface SseMessage {
  event: string;
  data: string;
  id: string | undefined;
}

export interface SseRead {
  message?: SseMessage;
  /** A `retry:` line: how long to wait before reconnecting. */
  retryMs?: number;
}

/**
 * Reads the `text/event-stream` framing (WHATWG HTML, "Server-sent events") from a response body until it ends. Comments
 * (the server's keep-alives) are skipped; a message without data is dropped, as EventSource does.
 */
export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseRead> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let event = '';
  let data: string[] = [];
  let id: string | undefined;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let newline: number;
      while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
        // A CR that ends the chunk may be the first half of a CRLF: wait for the next chunk.
        if (newline === buffer.length - 1 && buffer.endsWith('\r')) break;
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + (buffer.startsWith('\r\n', newline) ? 2 : 1));
        if (line === '') {
          if (data.length > 0) yield { message: { event: event || 'message', data: data.join('\n'), id } };
          event = '';
          data = [];
          id = undefined;
          continue;
        }
        const colon = line.indexOf(':');
        if (colon === 0) continue;
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') event = value;
        else if (field === 'data') data.push(value);
        else if (field === 'id' && !value.includes('\0')) id = value;
        else if (field === 'retry' && /^\d+$/.test(value)) yield { retryMs: Number(value) };
      }
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}
