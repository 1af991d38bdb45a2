// Microphone capture on the audio thread: 16-bit PCM chunks of 20 ms at the context's rate,
// posted (transferred, not copied) to the page, which sends them over the WebSocket.
"use strict";

class AlloNantesCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.chunk = (options.processorOptions && options.processorOptions.chunk) || 960;
    this.buffer = new Int16Array(this.chunk);
    this.filled = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (input && input.length > 0) {
      const samples = input[0];
      for (let i = 0; i < samples.length; i++) {
        const s = Math.max(-1, Math.min(1, samples[i]));
        this.buffer[this.filled++] = s < 0 ? s * 0x8000 : s * 0x7fff;
        if (this.filled === this.chunk) {
          this.port.postMessage(this.buffer.buffer, [this.buffer.buffer]);
          this.buffer = new Int16Array(this.chunk);
          this.filled = 0;
        }
      }
    }
    return true; // keep capturing while the node is connected
  }
}

registerProcessor("allonantes-capture", AlloNantesCapture);
