//! Opus (RFC 6716, RTP by RFC 7587) through the system's libopus, loaded at
//! run time with `dlopen("libopus.so.0")`, so building the bridge needs no
//! libopus headers, pkg-config or cmake, and a machine without `libopus0`
//! runs the bridge with Opus off instead of failing to start.
//!
//! Mono voice in 20 ms frames at one of Opus's rates (the mix uses 16 kHz).
//! The encoder has in-band FEC on; the decoder recovers a lost frame from
//! the next packet's FEC or conceals it. States are created (allocated by
//! libopus) once; `encode` and the decodes write into the caller's buffers
//! and never allocate. Every `unsafe` block of the codec is in this file.

use std::ffi::{c_char, c_int, c_uchar, c_void, CStr};
use std::ptr::NonNull;
use std::sync::OnceLock;

/// The library's soname on Debian (`libopus0`) and every other Linux.
const LIBRARY: &CStr = c"libopus.so.0";

// Constants from opus_defines.h (stable ABI since libopus 1.0).
const OPUS_OK: c_int = 0;
const OPUS_APPLICATION_VOIP: c_int = 2048;
const OPUS_SET_BITRATE_REQUEST: c_int = 4002;
const OPUS_SET_COMPLEXITY_REQUEST: c_int = 4010;
const OPUS_SET_INBAND_FEC_REQUEST: c_int = 4012;
const OPUS_SET_PACKET_LOSS_PERC_REQUEST: c_int = 4014;
const OPUS_SET_DTX_REQUEST: c_int = 4016;
const OPUS_SET_SIGNAL_REQUEST: c_int = 4024;
const OPUS_RESET_STATE: c_int = 4028;
const OPUS_SIGNAL_VOICE: c_int = 3001;

/// Loss the encoder expects until told otherwise: in-band FEC (LBRR) is only
/// sent when the expected loss is above zero, and 10 % keeps it on at a
/// modest cost in bitrate.
const DEFAULT_EXPECTED_LOSS_PERCENT: u8 = 10;

/// The largest Opus frame the decoder accepts in one packet: 120 ms.
const MAX_PACKET_MS: usize = 120;

/// Opaque libopus states.
#[repr(C)]
struct RawEncoder {
    _private: [u8; 0],
}
#[repr(C)]
struct RawDecoder {
    _private: [u8; 0],
}

type EncoderCreate = unsafe extern "C" fn(i32, c_int, c_int, *mut c_int) -> *mut RawEncoder;
type EncoderDestroy = unsafe extern "C" fn(*mut RawEncoder);
type Encode = unsafe extern "C" fn(*mut RawEncoder, *const i16, c_int, *mut c_uchar, i32) -> i32;
type EncoderCtl = unsafe extern "C" fn(*mut RawEncoder, c_int, ...) -> c_int;
type DecoderCreate = unsafe extern "C" fn(i32, c_int, *mut c_int) -> *mut RawDecoder;
type DecoderDestroy = unsafe extern "C" fn(*mut RawDecoder);
type Decode =
    unsafe extern "C" fn(*mut RawDecoder, *const c_uchar, i32, *mut i16, c_int, c_int) -> c_int;
type DecoderCtl = unsafe extern "C" fn(*mut RawDecoder, c_int, ...) -> c_int;
type StrError = unsafe extern "C" fn(c_int) -> *const c_char;
type VersionString = unsafe extern "C" fn() -> *const c_char;

/// The libopus functions the bridge calls, resolved once. The library is
/// never closed: the pointers stay valid for the life of the process.
struct Library {
    encoder_create: EncoderCreate,
    encoder_destroy: EncoderDestroy,
    encode: Encode,
    encoder_ctl: EncoderCtl,
    decoder_create: DecoderCreate,
    decoder_destroy: DecoderDestroy,
    decode: Decode,
    decoder_ctl: DecoderCtl,
    strerror: StrError,
    version: &'static str,
}

/// Why Opus cannot be used, or what libopus refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpusError {
    /// libopus could not be loaded; the string is the loader's reason.
    #[error("Opus is off: {0} (install the libopus0 package to enable it)")]
    Unavailable(String),
    #[error("Opus does not run at {0} Hz (it runs at 8000, 12000, 16000, 24000 or 48000)")]
    UnsupportedRate(u32),
    #[error("Opus complexity {0} is out of range (0 to 10)")]
    BadComplexity(u8),
    #[error("Opus bitrate {0} bit/s is out of range (6000 to 510000)")]
    BadBitrate(u32),
    #[error("an Opus frame here is {expected} samples (20 ms), not {got}")]
    FrameSize { expected: usize, got: usize },
    #[error("the output buffer holds {got} samples; at least {needed} are needed")]
    OutputTooSmall { needed: usize, got: usize },
    #[error("empty Opus payload")]
    EmptyPayload,
    /// libopus returned an error code; `message` is its `opus_strerror`
    /// (a static string, so a hostile packet costs no allocation).
    #[error("libopus {operation} failed: {message} ({code})")]
    Library {
        operation: &'static str,
        code: i32,
        message: &'static str,
    },
}

static LIBRARY_STATE: OnceLock<Result<Library, String>> = OnceLock::new();

/// The loaded library, or why it is not there. Loads on first use and logs
/// the outcome once.
fn library() -> Result<&'static Library, OpusError> {
    let state = LIBRARY_STATE.get_or_init(|| {
        let loaded = load();
        match &loaded {
            Ok(library) => tracing::info!(version = library.version, "Opus available"),
            Err(reason) => {
                tracing::warn!("Opus is off: {reason}; install the libopus0 package to offer Opus")
            }
        }
        loaded
    });
    state
        .as_ref()
        .map_err(|reason| OpusError::Unavailable(reason.clone()))
}

/// Whether libopus is usable on this machine (loading it if not done yet).
pub fn available() -> Result<(), OpusError> {
    library().map(|_| ())
}

/// The loaded libopus's version, such as `libopus 1.3.1`.
pub fn version() -> Result<&'static str, OpusError> {
    library().map(|library| library.version)
}

/// The reason `dlopen`/`dlsym` last failed on this thread.
fn loader_error() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string owned by the
    // loader, valid until the next dl* call on this thread; it is copied at once.
    unsafe {
        let text = libc::dlerror();
        if text.is_null() {
            "unknown loader error".to_string()
        } else {
            CStr::from_ptr(text).to_string_lossy().into_owned()
        }
    }
}

fn load() -> Result<Library, String> {
    // SAFETY: dlopen with a NUL-terminated name; libopus has no constructors
    // with side effects, and the handle is deliberately never closed.
    let handle = unsafe { libc::dlopen(LIBRARY.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(format!("cannot load libopus.so.0: {}", loader_error()));
    }
    let symbol = |name: &CStr| -> Result<*mut c_void, String> {
        // SAFETY: handle is a live dlopen handle, name is NUL-terminated.
        let address = unsafe { libc::dlsym(handle, name.as_ptr()) };
        if address.is_null() {
            Err(format!(
                "libopus.so.0 has no {}: {}",
                name.to_string_lossy(),
                loader_error()
            ))
        } else {
            Ok(address)
        }
    };
    // SAFETY: opus_get_version_string is `const char *(void)` in opus.h.
    let version_string = unsafe {
        std::mem::transmute::<*mut c_void, VersionString>(symbol(c"opus_get_version_string")?)
    };
    // SAFETY: it returns a NUL-terminated string in the library's static
    // data, and the library is never unloaded.
    let version: &'static str = unsafe { CStr::from_ptr(version_string()) }
        .to_str()
        .unwrap_or("libopus (unreadable version)");
    // SAFETY (all transmutes below): each address is libopus's exported
    // function of that name, whose C prototype in opus.h is the one the
    // target type spells (opus_int32 = i32, opus_int16 = i16, int = c_int).
    Ok(unsafe {
        Library {
            encoder_create: std::mem::transmute::<*mut c_void, EncoderCreate>(symbol(
                c"opus_encoder_create",
            )?),
            encoder_destroy: std::mem::transmute::<*mut c_void, EncoderDestroy>(symbol(
                c"opus_encoder_destroy",
            )?),
            encode: std::mem::transmute::<*mut c_void, Encode>(symbol(c"opus_encode")?),
            encoder_ctl: std::mem::transmute::<*mut c_void, EncoderCtl>(symbol(
                c"opus_encoder_ctl",
            )?),
            decoder_create: std::mem::transmute::<*mut c_void, DecoderCreate>(symbol(
                c"opus_decoder_create",
            )?),
            decoder_destroy: std::mem::transmute::<*mut c_void, DecoderDestroy>(symbol(
                c"opus_decoder_destroy",
            )?),
            decode: std::mem::transmute::<*mut c_void, Decode>(symbol(c"opus_decode")?),
            decoder_ctl: std::mem::transmute::<*mut c_void, DecoderCtl>(symbol(
                c"opus_decoder_ctl",
            )?),
            strerror: std::mem::transmute::<*mut c_void, StrError>(symbol(c"opus_strerror")?),
            version,
        }
    })
}

impl Library {
    /// An error for a negative libopus return code.
    fn error(&self, operation: &'static str, code: c_int) -> OpusError {
        // SAFETY: opus_strerror accepts any int and returns a NUL-terminated
        // string in the library's static data (never null); the library is
        // never unloaded, so the string lives as long as the process.
        let message: &'static CStr = unsafe { CStr::from_ptr((self.strerror)(code)) };
        OpusError::Library {
            operation,
            code,
            message: message.to_str().unwrap_or("unknown error"),
        }
    }
}

/// Samples per channel in one 20 ms frame at `rate_hz`, if Opus runs at that rate.
fn frame_samples(rate_hz: u32) -> Result<usize, OpusError> {
    match rate_hz {
        8000 | 12000 | 16000 | 24000 | 48000 => Ok(rate_hz as usize / 50),
        other => Err(OpusError::UnsupportedRate(other)),
    }
}

/// An Opus encoder for mono voice in 20 ms frames, in-band FEC on.
pub struct OpusEncoder {
    library: &'static Library,
    state: NonNull<RawEncoder>,
    frame_samples: usize,
}

// SAFETY: the encoder state is plain memory owned by this value alone;
// libopus keeps no thread-local or shared state for it.
unsafe impl Send for OpusEncoder {}
// SAFETY: only `&mut self` methods reach the libopus state; through `&self`
// nothing but the frame size can be read, so sharing references is harmless.
unsafe impl Sync for OpusEncoder {}

impl OpusEncoder {
    /// An encoder taking mono PCM at `rate_hz` in 20 ms frames, at
    /// `bitrate_bps` with `complexity` (0 to 10; 10 is best and slowest).
    pub fn new(rate_hz: u32, bitrate_bps: u32, complexity: u8) -> Result<Self, OpusError> {
        let frame_samples = frame_samples(rate_hz)?;
        if complexity > 10 {
            return Err(OpusError::BadComplexity(complexity));
        }
        if !(6000..=510_000).contains(&bitrate_bps) {
            return Err(OpusError::BadBitrate(bitrate_bps));
        }
        let library = library()?;
        let mut code: c_int = OPUS_OK;
        // SAFETY: valid rate, one channel, a known application; `code` is a
        // live int for the out-parameter.
        let raw = unsafe {
            (library.encoder_create)(rate_hz as i32, 1, OPUS_APPLICATION_VOIP, &mut code)
        };
        let Some(state) = NonNull::new(raw).filter(|_| code == OPUS_OK) else {
            return Err(library.error("opus_encoder_create", code));
        };
        let mut encoder = OpusEncoder {
            library,
            state,
            frame_samples,
        };
        encoder.ctl(
            "OPUS_SET_SIGNAL",
            OPUS_SET_SIGNAL_REQUEST,
            OPUS_SIGNAL_VOICE,
        )?;
        encoder.ctl(
            "OPUS_SET_BITRATE",
            OPUS_SET_BITRATE_REQUEST,
            bitrate_bps as i32,
        )?;
        encoder.ctl(
            "OPUS_SET_COMPLEXITY",
            OPUS_SET_COMPLEXITY_REQUEST,
            complexity.into(),
        )?;
        encoder.ctl("OPUS_SET_INBAND_FEC", OPUS_SET_INBAND_FEC_REQUEST, 1)?;
        encoder.set_expected_loss_percent(DEFAULT_EXPECTED_LOSS_PERCENT)?;
        Ok(encoder)
    }

    /// One `opus_encoder_ctl` setter taking an `opus_int32`.
    fn ctl(&mut self, name: &'static str, request: c_int, value: i32) -> Result<(), OpusError> {
        // SAFETY: the state is live; every setter this file uses takes
        // exactly one opus_int32 after the request code.
        let code = unsafe { (self.library.encoder_ctl)(self.state.as_ptr(), request, value) };
        if code == OPUS_OK {
            Ok(())
        } else {
            Err(self.library.error(name, code))
        }
    }

    /// The packet loss the encoder plans FEC for (0 to 100 %; 0 sends no FEC).
    pub fn set_expected_loss_percent(&mut self, percent: u8) -> Result<(), OpusError> {
        let percent = percent.min(100);
        self.ctl(
            "OPUS_SET_PACKET_LOSS_PERC",
            OPUS_SET_PACKET_LOSS_PERC_REQUEST,
            percent.into(),
        )
    }

    /// Discontinuous transmission: during silence the encoder emits 1-2 byte
    /// packets (which need not be sent) with occasional comfort-noise updates.
    pub fn set_dtx(&mut self, on: bool) -> Result<(), OpusError> {
        self.ctl("OPUS_SET_DTX", OPUS_SET_DTX_REQUEST, on.into())
    }

    /// Forgets the signal so far (a new stream).
    pub fn reset(&mut self) -> Result<(), OpusError> {
        // SAFETY: the state is live; OPUS_RESET_STATE takes no argument.
        let code = unsafe { (self.library.encoder_ctl)(self.state.as_ptr(), OPUS_RESET_STATE) };
        if code == OPUS_OK {
            Ok(())
        } else {
            Err(self.library.error("OPUS_RESET_STATE", code))
        }
    }

    /// Samples in the one 20 ms frame `encode` takes.
    pub fn frame_samples(&self) -> usize {
        self.frame_samples
    }

    /// Encodes exactly one 20 ms mono frame; returns the payload bytes
    /// written to `out` (1 or 2 bytes is a DTX packet). 1275 bytes always fit.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, OpusError> {
        if pcm.len() != self.frame_samples {
            return Err(OpusError::FrameSize {
                expected: self.frame_samples,
                got: pcm.len(),
            });
        }
        let out_len = i32::try_from(out.len()).unwrap_or(i32::MAX);
        // SAFETY: the state is live; pcm holds frame_samples readable samples
        // (one channel), out holds out_len writable bytes.
        let written = unsafe {
            (self.library.encode)(
                self.state.as_ptr(),
                pcm.as_ptr(),
                self.frame_samples as c_int,
                out.as_mut_ptr(),
                out_len,
            )
        };
        if written < 0 {
            return Err(self.library.error("opus_encode", written));
        }
        Ok(written as usize)
    }
}

impl Drop for OpusEncoder {
    fn drop(&mut self) {
        // SAFETY: the state came from opus_encoder_create and is destroyed once.
        unsafe { (self.library.encoder_destroy)(self.state.as_ptr()) }
    }
}

/// An Opus decoder to mono PCM at a given rate: normal decoding, recovery of
/// a lost frame from the next packet's FEC, and concealment.
pub struct OpusDecoder {
    library: &'static Library,
    state: NonNull<RawDecoder>,
    frame_samples: usize,
}

// SAFETY: as for the encoder, the state is plain memory owned by this value,
// and only `&mut self` methods reach it.
unsafe impl Send for OpusDecoder {}
// SAFETY: as for the encoder.
unsafe impl Sync for OpusDecoder {}

impl OpusDecoder {
    /// A decoder to mono PCM at `rate_hz` (any packet's rate is resampled by
    /// libopus to this one).
    pub fn new(rate_hz: u32) -> Result<Self, OpusError> {
        let frame_samples = frame_samples(rate_hz)?;
        let library = library()?;
        let mut code: c_int = OPUS_OK;
        // SAFETY: valid rate, one channel; `code` is a live out-parameter.
        let raw = unsafe { (library.decoder_create)(rate_hz as i32, 1, &mut code) };
        let Some(state) = NonNull::new(raw).filter(|_| code == OPUS_OK) else {
            return Err(library.error("opus_decoder_create", code));
        };
        Ok(OpusDecoder {
            library,
            state,
            frame_samples,
        })
    }

    /// Samples in one 20 ms frame at the decoder's rate.
    pub fn frame_samples(&self) -> usize {
        self.frame_samples
    }

    /// Forgets the stream so far (a new SSRC, a codec change).
    pub fn reset(&mut self) -> Result<(), OpusError> {
        // SAFETY: the state is live; OPUS_RESET_STATE takes no argument.
        let code = unsafe { (self.library.decoder_ctl)(self.state.as_ptr(), OPUS_RESET_STATE) };
        if code == OPUS_OK {
            Ok(())
        } else {
            Err(self.library.error("OPUS_RESET_STATE", code))
        }
    }

    /// One `opus_decode` call; `payload` empty means a lost packet.
    fn run(
        &mut self,
        operation: &'static str,
        payload: &[u8],
        out: &mut [i16],
        samples: usize,
        fec: bool,
    ) -> Result<usize, OpusError> {
        if out.len() < samples {
            return Err(OpusError::OutputTooSmall {
                needed: samples,
                got: out.len(),
            });
        }
        let Ok(payload_len) = i32::try_from(payload.len()) else {
            return Err(self.library.error(operation, -4)); // OPUS_INVALID_PACKET
        };
        let data = if payload.is_empty() {
            std::ptr::null()
        } else {
            payload.as_ptr()
        };
        // SAFETY: the state is live; data is null (loss) or payload_len
        // readable bytes; out holds at least `samples` writable samples (one
        // channel) and libopus writes at most that many.
        let decoded = unsafe {
            (self.library.decode)(
                self.state.as_ptr(),
                data,
                payload_len,
                out.as_mut_ptr(),
                samples as c_int,
                fec.into(),
            )
        };
        if decoded < 0 {
            return Err(self.library.error(operation, decoded));
        }
        Ok(decoded as usize)
    }

    /// Decodes one packet into `out`; returns the samples written (a 20 ms
    /// packet gives `frame_samples()`; `out` must hold the packet's duration).
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, OpusError> {
        if payload.is_empty() {
            return Err(OpusError::EmptyPayload);
        }
        let room = out.len().min(self.frame_samples * MAX_PACKET_MS / 20);
        self.run("opus_decode", payload, out, room, false)
    }

    /// Recovers the 20 ms frame lost just before `next_payload` from that
    /// packet's in-band FEC (or conceals it when the packet carries none);
    /// `next_payload` is then decoded normally with [`OpusDecoder::decode`].
    pub fn decode_fec(&mut self, next_payload: &[u8], out: &mut [i16]) -> Result<usize, OpusError> {
        if next_payload.is_empty() {
            return Err(OpusError::EmptyPayload);
        }
        self.run(
            "opus_decode (FEC)",
            next_payload,
            out,
            self.frame_samples,
            true,
        )
    }

    /// Conceals one lost 20 ms frame (packet loss concealment).
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, OpusError> {
        self.run(
            "opus_decode (concealment)",
            &[],
            out,
            self.frame_samples,
            false,
        )
    }
}

impl Drop for OpusDecoder {
    fn drop(&mut self) {
        // SAFETY: the state came from opus_decoder_create and is destroyed once.
        unsafe { (self.library.decoder_destroy)(self.state.as_ptr()) }
    }
}

#[cfg(test)]
mod tests;
