//! The message layer over tungstenite's frame header codec: what natsgate
//! reads from and writes to a WebSocket client, with no I/O.
//!
//! tungstenite parses and formats the frame headers ([`FrameHeader`]); this
//! layer adds what nats-server's `server/websocket.go` does on top of them:
//!
//! - data frames (binary, and text read the same way) are NATS bytes: their
//!   payloads are unmasked and handed on as they arrive, so an op may be
//!   split across frames and across fragments of one message;
//! - control frames may come between fragments: a ping is answered with a
//!   pong, a close is echoed (its code and reason) and ends the stream;
//! - masking is required from clients unless `Nats-No-Masking` was agreed;
//! - `permessage-deflate` without context takeover (RFC 7692): a compressed
//!   message is gathered, bounded by [`max_message_size`], then inflated
//!   with a fresh state, bounded the same way;
//! - any violation is a [`WsError`]; the connection is then dropped without
//!   a close frame (what nats-server 2.15.1 is seen to do, spec 9.11).
//!
//! Every length is bounded before anything is buffered, and no input makes
//! this layer panic (the `ws_frames` fuzz target).

use std::io::Cursor;

use bytes::{Buf, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// Control frame payloads are at most this long (RFC 6455 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// Outgoing messages of at most this many bytes are not compressed
/// (nats-server's `wsCompressThreshold`).
const COMPRESS_THRESHOLD: usize = 64;
/// The frame size used for browsers (nats-server's
/// `wsFrameSizeForBrowsers`): they handle small frames better.
pub const BROWSER_FRAME: usize = 4096;
/// The most NATS bytes put into one outgoing frame for other clients.
pub const FRAME_CHUNK: usize = 256 * 1024;
/// The tail a deflate sync flush leaves, removed on send and restored on
/// receipt (RFC 7692 7.2.1).
const DEFLATE_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// nats-server's `wsMaxMsgPayloadMultiple` and `wsMaxMsgPayloadLimit`.
const MESSAGE_PAYLOAD_MULTIPLE: usize = 8;
const MESSAGE_LIMIT: usize = 64 * 1024 * 1024;

/// The bound on a compressed message, before and after inflating, for a
/// client whose max payload is `max_payload` (nats-server's
/// `wsMaxMessageSize`): room for several max-payload ops, capped.
pub fn max_message_size(max_payload: usize) -> usize {
    max_payload
        .max(1)
        .saturating_mul(MESSAGE_PAYLOAD_MULTIPLE)
        .min(MESSAGE_LIMIT)
}

/// Why a client's frames are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WsError {
    /// The frames break RFC 6455 or what was negotiated.
    #[error("websocket protocol error: {0}")]
    Protocol(&'static str),
    /// A compressed message above [`max_message_size`].
    #[error("websocket message too big")]
    TooBig,
}

/// What the reader asks the writer to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Answer a ping with this payload.
    Pong(Bytes),
    /// The client closed: echo its close payload (code and reason; empty
    /// when it sent none) and end.
    Close(Bytes),
}

/// The reading state of one client connection.
#[derive(Debug)]
pub struct FrameReader {
    /// Clients must mask (unless `Nats-No-Masking: true` was agreed).
    mask_required: bool,
    /// `permessage-deflate` was negotiated.
    compression: bool,
    max_message: usize,
    /// The data frame being read, once its header is parsed.
    frame: Option<InFrame>,
    /// A message was started and its final frame has not come yet.
    in_message: bool,
    /// The message being read is compressed (set by its first frame).
    compressed: bool,
    /// The compressed message gathered so far.
    deflated: Vec<u8>,
    /// A close was read: nothing after it counts.
    closed: bool,
}

#[derive(Debug)]
struct InFrame {
    remaining: u64,
    mask: Option<[u8; 4]>,
    /// Where in the mask the next byte is.
    mask_pos: usize,
    /// The last frame of its message.
    last: bool,
}

impl FrameReader {
    pub fn new(mask_required: bool, compression: bool, max_payload: usize) -> FrameReader {
        FrameReader {
            mask_required,
            compression,
            max_message: max_message_size(max_payload),
            frame: None,
            in_message: false,
            compressed: false,
            deflated: Vec::new(),
            closed: false,
        }
    }

    /// Whether a close was read (the stream is over).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Reads frames from the front of `input`, consuming what it handles,
    /// appends the NATS bytes to `out` and what must be sent back to
    /// `replies`. Stops when `input` holds no complete header, when the
    /// stream closed, or once `out` has grown by `limit` bytes or more
    /// (the caller comes back for the rest).
    pub fn read(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        limit: usize,
        replies: &mut Vec<Reply>,
    ) -> Result<(), WsError> {
        let start = out.len();
        while !self.closed && out.len() - start < limit {
            if self.frame.is_some() {
                if !self.payload(input, out)? {
                    return Ok(());
                }
                continue;
            }
            let mut cursor = Cursor::new(&input[..]);
            let (header, length) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return Ok(()),
                Err(_) => return Err(WsError::Protocol("invalid opcode")),
            };
            let header_len = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
            if header.rsv2 || header.rsv3 {
                return Err(WsError::Protocol("RSV2 and RSV3 must be clear"));
            }
            if header.rsv1 && !self.compression {
                return Err(WsError::Protocol(
                    "compressed frame without negotiated permessage-deflate",
                ));
            }
            if self.mask_required && header.mask.is_none() {
                return Err(WsError::Protocol("mask bit missing"));
            }
            if length & (1 << 63) != 0 {
                return Err(WsError::Protocol("invalid 64-bit payload length"));
            }
            match header.opcode {
                OpCode::Control(control) => {
                    if length > MAX_CONTROL_PAYLOAD as u64 {
                        return Err(WsError::Protocol("control frame too long"));
                    }
                    if !header.is_final {
                        return Err(WsError::Protocol("control frame not final"));
                    }
                    if header.rsv1 {
                        return Err(WsError::Protocol("control frame compressed"));
                    }
                    // At most 125 bytes: wait for all of it.
                    let total = header_len + length as usize;
                    if input.len() < total {
                        return Ok(());
                    }
                    input.advance(header_len);
                    let mut payload = input.split_to(length as usize);
                    if let Some(mask) = header.mask {
                        unmask(&mut payload, mask, 0);
                    }
                    self.control(control, payload.freeze(), replies)?;
                }
                OpCode::Data(data) => {
                    match data {
                        Data::Text | Data::Binary => {
                            if self.in_message {
                                return Err(WsError::Protocol(
                                    "new message before the previous one ended",
                                ));
                            }
                            self.compressed = header.rsv1;
                        }
                        Data::Continue => {
                            if !self.in_message || header.rsv1 {
                                return Err(WsError::Protocol("invalid continuation frame"));
                            }
                        }
                        Data::Reserved(_) => return Err(WsError::Protocol("invalid opcode")),
                    }
                    input.advance(header_len);
                    self.in_message = !header.is_final;
                    self.frame = Some(InFrame {
                        remaining: length,
                        mask: header.mask,
                        mask_pos: 0,
                        last: header.is_final,
                    });
                }
            }
        }
        Ok(())
    }

    /// Moves what `input` has of the current data frame's payload. Returns
    /// whether the frame ended (false: `input` is used up).
    fn payload(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> Result<bool, WsError> {
        let Some(frame) = &mut self.frame else {
            return Ok(true);
        };
        let take = usize::try_from(frame.remaining)
            .unwrap_or(usize::MAX)
            .min(input.len());
        if take > 0 {
            let mut chunk = input.split_to(take);
            if let Some(mask) = frame.mask {
                frame.mask_pos = unmask(&mut chunk, mask, frame.mask_pos);
            }
            frame.remaining -= take as u64;
            if self.compressed {
                if self.deflated.len() + chunk.len() > self.max_message {
                    return Err(WsError::TooBig);
                }
                self.deflated.extend_from_slice(&chunk);
            } else {
                out.extend_from_slice(&chunk);
            }
        }
        if frame.remaining > 0 {
            return Ok(false);
        }
        let last = frame.last;
        self.frame = None;
        if last && self.compressed {
            self.compressed = false;
            let deflated = std::mem::take(&mut self.deflated);
            inflate(&deflated, out, self.max_message)?;
        }
        Ok(true)
    }

    fn control(
        &mut self,
        control: Control,
        payload: Bytes,
        replies: &mut Vec<Reply>,
    ) -> Result<(), WsError> {
        match control {
            Control::Ping => replies.push(Reply::Pong(payload)),
            Control::Pong => {}
            Control::Close => {
                let echo = close_echo(&payload)?;
                replies.push(Reply::Close(echo));
                self.closed = true;
            }
            Control::Reserved(_) => return Err(WsError::Protocol("invalid opcode")),
        }
        Ok(())
    }
}

/// The close payload to echo for a client's close (nats-server's
/// `wsHandleControlFrame`): its code and reason; a reason that is not UTF-8
/// becomes 1007; no code, no payload.
fn close_echo(payload: &[u8]) -> Result<Bytes, WsError> {
    match payload.len() {
        0 => return Ok(Bytes::new()),
        1 => return Err(WsError::Protocol("close frame payload of 1 byte")),
        _ => {}
    }
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    if !valid_close_code(code) {
        return Err(WsError::Protocol("invalid close status code"));
    }
    if std::str::from_utf8(&payload[2..]).is_err() {
        return Ok(close_payload(1007, "invalid utf8 body in close frame"));
    }
    Ok(Bytes::copy_from_slice(payload))
}

fn valid_close_code(code: u16) -> bool {
    !matches!(code, 1004..=1006 | 1015)
        && (1000..5000).contains(&code)
        && !(1016..=2999).contains(&code)
}

/// A close frame's payload: the code, then the reason cut to fit (with
/// `...`, as nats-server's `wsCreateCloseMessage`).
pub fn close_payload(code: u16, reason: &str) -> Bytes {
    let mut reason = reason;
    let mut dots = "";
    if reason.len() > MAX_CONTROL_PAYLOAD - 2 {
        let mut cut = MAX_CONTROL_PAYLOAD - 5;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason = &reason[..cut];
        dots = "...";
    }
    let mut payload = Vec::with_capacity(2 + reason.len() + dots.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    payload.extend_from_slice(dots.as_bytes());
    Bytes::from(payload)
}

/// XORs `buf` with `mask` starting at `pos` in it; returns the next `pos`.
/// Eight bytes at a time: this is the per-byte cost of every client frame.
fn unmask(buf: &mut [u8], mask: [u8; 4], pos: usize) -> usize {
    let mut key = [0u8; 8];
    for (i, k) in key.iter_mut().enumerate() {
        *k = mask[(pos + i) & 3];
    }
    let wide = u64::from_ne_bytes(key);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    let rest = chunks.into_remainder();
    for (i, byte) in rest.iter_mut().enumerate() {
        *byte ^= key[i];
    }
    (pos + buf.len()) & 3
}

/// Inflates one message (with the tail restored) into `out`, refusing more
/// than `max` bytes of output.
fn inflate(deflated: &[u8], out: &mut BytesMut, max: usize) -> Result<(), WsError> {
    let mut inflater = Decompress::new(false);
    let mut produced = 0usize;
    let mut scratch = vec![0u8; 32 * 1024];
    for input in [deflated, &DEFLATE_TAIL[..]] {
        let mut input = input;
        loop {
            let before_in = inflater.total_in();
            let before_out = inflater.total_out();
            let status = inflater
                .decompress(input, &mut scratch, FlushDecompress::Sync)
                .map_err(|_| WsError::Protocol("invalid deflate data"))?;
            let used = (inflater.total_in() - before_in) as usize;
            let made = (inflater.total_out() - before_out) as usize;
            input = &input[used..];
            produced += made;
            if produced > max {
                return Err(WsError::TooBig);
            }
            out.extend_from_slice(&scratch[..made]);
            if status == Status::StreamEnd || (input.is_empty() && made < scratch.len()) {
                break;
            }
            if used == 0 && made == 0 {
                break;
            }
        }
    }
    Ok(())
}

/// The writing side of one client connection: frames NATS bytes as binary
/// messages, compressed when negotiated.
#[derive(Debug)]
pub struct FrameWriter {
    compression: Option<Compress>,
    /// The largest frame payload (browsers get small frames).
    frame_size: usize,
}

impl FrameWriter {
    pub fn new(compression: bool, browser: bool) -> FrameWriter {
        FrameWriter {
            compression: compression.then(|| Compress::new(Compression::fast(), false)),
            frame_size: if browser { BROWSER_FRAME } else { FRAME_CHUNK },
        }
    }

    /// How many NATS bytes to take for one [`FrameWriter::data`] call.
    pub fn chunk(&self) -> usize {
        self.frame_size
    }

    /// Frames `data` (NATS bytes, in pieces) as one binary message, or, for
    /// browsers, several (each at most [`BROWSER_FRAME`]), and appends the
    /// wire bytes to `out` (the payload pieces themselves, uncompressed, are
    /// not copied).
    pub fn data(&mut self, data: Vec<Bytes>, out: &mut Vec<Bytes>) {
        let total: usize = data.iter().map(Bytes::len).sum();
        if total == 0 {
            return;
        }
        if total > COMPRESS_THRESHOLD
            && let Some(deflater) = &mut self.compression
        {
            let deflated = deflate(deflater, &data);
            // Fragments of one compressed message: only the first says
            // compressed (RSV1).
            let pieces: Vec<&[u8]> = deflated.chunks(self.frame_size).collect();
            let count = pieces.len();
            for (i, piece) in pieces.into_iter().enumerate() {
                let opcode = if i == 0 { Data::Binary } else { Data::Continue };
                out.push(header(
                    OpCode::Data(opcode),
                    i == 0,
                    i + 1 == count,
                    piece.len(),
                ));
                out.push(Bytes::copy_from_slice(piece));
            }
            return;
        }
        // Uncompressed: frames of at most frame_size, each a whole message,
        // as nats-server does.
        let mut pending: Vec<Bytes> = Vec::new();
        let mut pending_len = 0;
        for mut piece in data {
            while !piece.is_empty() {
                let take = piece.len().min(self.frame_size - pending_len);
                pending.push(piece.split_to(take));
                pending_len += take;
                if pending_len == self.frame_size {
                    out.push(header(OpCode::Data(Data::Binary), false, true, pending_len));
                    out.append(&mut pending);
                    pending_len = 0;
                }
            }
        }
        if pending_len > 0 {
            out.push(header(OpCode::Data(Data::Binary), false, true, pending_len));
            out.append(&mut pending);
        }
    }
}

/// A control frame (server frames are not masked).
pub fn control_frame(control: Control, payload: &[u8]) -> Bytes {
    let len = payload.len().min(MAX_CONTROL_PAYLOAD);
    let head = header(OpCode::Control(control), false, true, len);
    let mut frame = Vec::with_capacity(head.len() + len);
    frame.extend_from_slice(&head);
    frame.extend_from_slice(&payload[..len]);
    Bytes::from(frame)
}

fn header(opcode: OpCode, compressed: bool, last: bool, len: usize) -> Bytes {
    let header = FrameHeader {
        is_final: last,
        rsv1: compressed,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: None,
    };
    let mut out = Vec::with_capacity(10);
    // Writing into a Vec cannot fail.
    let _ = header.format(len as u64, &mut out);
    Bytes::from(out)
}

/// One message deflated with a fresh window (no context takeover), the
/// sync-flush tail removed.
fn deflate(deflater: &mut Compress, data: &[Bytes]) -> Vec<u8> {
    deflater.reset();
    let total: usize = data.iter().map(Bytes::len).sum();
    let mut out = Vec::with_capacity(total / 2 + 64);
    for (i, piece) in data.iter().enumerate() {
        let flush = if i + 1 == data.len() {
            FlushCompress::Sync
        } else {
            FlushCompress::None
        };
        let mut input = &piece[..];
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(1024));
            }
            let before = deflater.total_in();
            // Errors are impossible for a valid stream state; stop on one.
            if deflater.compress_vec(input, &mut out, flush).is_err() {
                break;
            }
            let used = (deflater.total_in() - before) as usize;
            input = &input[used..];
            // Done with this piece when it is all taken and, for the
            // flush, the output did not fill up.
            if input.is_empty() && (flush == FlushCompress::None || out.capacity() > out.len()) {
                break;
            }
        }
    }
    if out.ends_with(&DEFLATE_TAIL) {
        out.truncate(out.len() - DEFLATE_TAIL.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(
        opcode: u8,
        last: bool,
        rsv1: bool,
        payload: &[u8],
        mask: Option<[u8; 4]>,
    ) -> Vec<u8> {
        let mut out = vec![opcode | if last { 0x80 } else { 0 } | if rsv1 { 0x40 } else { 0 }];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(m | n as u8),
            n if n < 65536 => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mut body = payload.to_vec();
        if let Some(mask) = mask {
            out.extend_from_slice(&mask);
            unmask(&mut body, mask, 0);
        }
        out.extend_from_slice(&body);
        out
    }

    fn read_all(reader: &mut FrameReader, bytes: &[u8]) -> Result<(Vec<u8>, Vec<Reply>), WsError> {
        let mut input = BytesMut::from(bytes);
        let mut out = BytesMut::new();
        let mut replies = Vec::new();
        reader.read(&mut input, &mut out, usize::MAX, &mut replies)?;
        Ok((out.to_vec(), replies))
    }

    const MASK: Option<[u8; 4]> = Some([1, 2, 3, 4]);

    #[test]
    fn masked_binary_and_text_frames_are_nats_bytes() {
        let mut r = FrameReader::new(true, false, 1024);
        let mut bytes = client_frame(2, true, false, b"PUB a 1\r\n", MASK);
        bytes.extend(client_frame(1, true, false, b"x\r\n", MASK));
        let (out, replies) = read_all(&mut r, &bytes).unwrap();
        assert_eq!(out, b"PUB a 1\r\nx\r\n");
        assert!(replies.is_empty());
    }

    #[test]
    fn fragments_with_a_ping_between_and_every_split() {
        let mut bytes = client_frame(2, false, false, b"PUB a", MASK);
        bytes.extend(client_frame(9, true, false, b"hi", MASK));
        bytes.extend(client_frame(0, true, false, b" 1\r\nx\r\n", MASK));
        for split in 0..bytes.len() {
            let mut r = FrameReader::new(true, false, 1024);
            let mut input = BytesMut::from(&bytes[..split]);
            let mut out = BytesMut::new();
            let mut replies = Vec::new();
            r.read(&mut input, &mut out, usize::MAX, &mut replies)
                .unwrap();
            input.extend_from_slice(&bytes[split..]);
            r.read(&mut input, &mut out, usize::MAX, &mut replies)
                .unwrap();
            assert_eq!(&out[..], b"PUB a 1\r\nx\r\n", "split {split}");
            assert_eq!(replies, vec![Reply::Pong(Bytes::from_static(b"hi"))]);
            assert!(input.is_empty());
        }
    }

    #[test]
    fn unmasked_frames_refused_unless_no_masking() {
        let bytes = client_frame(2, true, false, b"PING\r\n", None);
        let mut r = FrameReader::new(true, false, 1024);
        assert!(matches!(
            read_all(&mut r, &bytes),
            Err(WsError::Protocol(_))
        ));
        let mut r = FrameReader::new(false, false, 1024);
        assert_eq!(read_all(&mut r, &bytes).unwrap().0, b"PING\r\n");
    }

    #[test]
    fn protocol_errors() {
        let cases: Vec<Vec<u8>> = vec![
            client_frame(0, true, false, b"x", MASK), // continuation first
            client_frame(3, true, false, b"x", MASK), // reserved opcode
            client_frame(2 | 0x20, true, false, b"x", MASK), // rsv2
            client_frame(2, true, true, b"x", MASK),  // compressed, not agreed
            client_frame(9, false, false, b"x", MASK), // control not final
            client_frame(9, true, false, &[0; 126], MASK), // control too long
            client_frame(8, true, false, &[3], MASK), // close of one byte
            client_frame(8, true, false, &1005u16.to_be_bytes(), MASK),
        ];
        for (i, bytes) in cases.iter().enumerate() {
            let mut r = FrameReader::new(true, false, 1024);
            assert!(read_all(&mut r, bytes).is_err(), "case {i}");
        }
        let mut two = client_frame(2, false, false, b"a", MASK);
        two.extend(client_frame(2, true, false, b"b", MASK));
        let mut r = FrameReader::new(true, false, 1024);
        assert!(read_all(&mut r, &two).is_err(), "new message in a message");
    }

    #[test]
    fn close_is_echoed_and_ends_the_stream() {
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        let mut bytes = client_frame(8, true, false, &payload, MASK);
        bytes.extend(client_frame(2, true, false, b"PING\r\n", MASK));
        let mut r = FrameReader::new(true, false, 1024);
        let (out, replies) = read_all(&mut r, &bytes).unwrap();
        assert!(out.is_empty());
        assert_eq!(replies, vec![Reply::Close(Bytes::from(payload))]);
        assert!(r.is_closed());
        let bad = [0x03, 0xe8, 0xff];
        let mut r = FrameReader::new(true, false, 1024);
        let (_, replies) = read_all(&mut r, &client_frame(8, true, false, &bad, MASK)).unwrap();
        assert_eq!(
            replies,
            vec![Reply::Close(close_payload(
                1007,
                "invalid utf8 body in close frame"
            ))]
        );
    }

    #[test]
    fn compressed_messages_round_trip_and_are_bounded() {
        let text = b"PUB subject 100\r\n".repeat(20);
        let mut writer = FrameWriter::new(true, false);
        let mut frames = Vec::new();
        writer.data(vec![Bytes::from(text.clone())], &mut frames);
        let wire: Vec<u8> = frames.concat();
        assert_eq!(wire[0] & 0x40, 0x40, "RSV1");
        // As a client would send it: masked.
        let mut cursor = Cursor::new(&wire[..]);
        let (_, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        let body = &wire[cursor.position() as usize..];
        assert_eq!(body.len() as u64, len);
        let masked = client_frame(2, true, true, body, MASK);
        let mut r = FrameReader::new(true, true, 1024);
        assert_eq!(read_all(&mut r, &masked).unwrap().0, text);
        // Inflating beyond the bound is refused.
        let mut r = FrameReader::new(true, true, 16);
        assert_eq!(read_all(&mut r, &masked), Err(WsError::TooBig));
    }

    #[test]
    fn small_and_browser_frames() {
        let mut writer = FrameWriter::new(true, true);
        let mut frames = Vec::new();
        writer.data(vec![Bytes::from_static(b"PING\r\n")], &mut frames);
        assert_eq!(
            frames.concat(),
            [&[0x82, 6][..], b"PING\r\n"].concat(),
            "small: not compressed"
        );
        let mut writer = FrameWriter::new(false, true);
        let mut frames = Vec::new();
        writer.data(
            vec![Bytes::from(vec![b'x'; BROWSER_FRAME + 10])],
            &mut frames,
        );
        let wire = frames.concat();
        let mut r = FrameReader::new(false, false, 1 << 20);
        assert_eq!(read_all(&mut r, &wire).unwrap().0.len(), BROWSER_FRAME + 10);
        assert_eq!(wire[0], 0x82);
        assert_eq!(wire[4 + BROWSER_FRAME], 0x82, "a second whole message");
    }

    #[test]
    fn unmask_matches_the_byte_by_byte_definition() {
        let mask = [0xa1, 0x02, 0x7c, 0xff];
        for pos in 0..4 {
            for len in 0..40 {
                let data: Vec<u8> = (0..len as u8).collect();
                let mut fast = data.clone();
                let next = unmask(&mut fast, mask, pos);
                let slow: Vec<u8> = data
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ mask[(pos + i) & 3])
                    .collect();
                assert_eq!(fast, slow, "pos {pos} len {len}");
                assert_eq!(next, (pos + len) & 3);
            }
        }
    }

    #[test]
    fn output_limit_leaves_the_rest() {
        let mut bytes = Vec::new();
        for _ in 0..4 {
            bytes.extend(client_frame(2, true, false, b"PING\r\n", MASK));
        }
        let mut r = FrameReader::new(true, false, 1024);
        let mut input = BytesMut::from(&bytes[..]);
        let mut out = BytesMut::new();
        let mut replies = Vec::new();
        r.read(&mut input, &mut out, 6, &mut replies).unwrap();
        assert_eq!(&out[..], b"PING\r\n");
        r.read(&mut input, &mut out, usize::MAX, &mut replies)
            .unwrap();
        assert_eq!(out.len(), 24);
    }
}
