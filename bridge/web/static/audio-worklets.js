// AudioWorklet processors for jingbao pages. Both run in an AudioContext created at 16 kHz, so the browser does
// the resampling and these only convert between float samples and 16 kHz mono int16 PCM (the bridge's format).

// Microphone -> int16 PCM chunks of CHUNK samples, posted to the page (which sends them over a WebSocket).
class PcmCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.chunk = new Int16Array(640); // 40 ms at 16 kHz
    this.filled = 0;
  }
  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (input) {
      for (let i = 0; i < input.length; i++) {
        const s = Math.max(-1, Math.min(1, input[i]));
        this.chunk[this.filled++] = s < 0 ? s * 0x8000 : s * 0x7fff;
        if (this.filled === this.chunk.length) {
          this.port.postMessage(this.chunk.buffer, [this.chunk.buffer]);
          this.chunk = new Int16Array(640);
          this.filled = 0;
        }
      }
    }
    return true;
  }
}

// int16 PCM chunks from the page -> speaker, through a small queue; silence when it runs dry (a live channel is
// quiet most of the time), and the oldest audio dropped when more than half a second piles up (keeps it live).
// Tells the page how many samples it played about every quarter second ({played}), so the page knows audio flows.
class PcmPlayer extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = [];
    this.offset = 0;
    this.queued = 0;
    this.played = 0;
    this.blocks = 0;
    this.port.onmessage = (e) => {
      const chunk = new Int16Array(e.data);
      this.queue.push(chunk);
      this.queued += chunk.length;
      while (this.queued > 8000 && this.queue.length > 1) {
        this.queued -= this.queue.shift().length - this.offset;
        this.offset = 0;
      }
    };
  }
  process(inputs, outputs) {
    const out = outputs[0][0];
    for (let i = 0; i < out.length; i++) {
      const chunk = this.queue[0];
      if (!chunk) { out[i] = 0; continue; }
      out[i] = chunk[this.offset++] / 0x8000;
      this.queued--;
      this.played++;
      if (this.offset >= chunk.length) { this.queue.shift(); this.offset = 0; }
    }
    if (++this.blocks % 32 === 0 && this.played) {  // 32 blocks of 128 samples at 16 kHz: 0.256 s
      this.port.postMessage({ played: this.played });
      this.played = 0;
    }
    return true;
  }
}

registerProcessor("pcm-capture", PcmCapture);
registerProcessor("pcm-player", PcmPlayer);
