//! ITU-T G.711 u-law and A-law on 16-bit linear PCM: decode through 256-entry
//! tables built at compile time, encode with a leading-zero count per sample.
//! Pure functions on caller buffers: no state, no allocation.

/// u-law bias added before the segment search (G.711 table 2, scaled to 16 bits).
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude u-law can represent before the bias would overflow the top segment.
const ULAW_CLIP: i32 = 32635;

/// Decodes one u-law byte to 16-bit linear.
pub const fn ulaw_to_linear(code: u8) -> i16 {
    let inverted = !code;
    let exponent = (inverted >> 4) & 0x07;
    let mantissa = (inverted & 0x0F) as i32;
    // The decoder output sits in the middle of the quantisation interval.
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    if inverted & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Decodes one A-law byte to 16-bit linear.
pub const fn alaw_to_linear(code: u8) -> i16 {
    let toggled = code ^ 0x55; // even bits are inverted on the line (G.711 §3)
    let segment = (toggled >> 4) & 0x07;
    let mantissa = (toggled & 0x0F) as i32;
    let magnitude = if segment == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (segment - 1)
    };
    if toggled & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

/// Encodes one 16-bit linear sample as u-law.
#[inline]
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let sample = i32::from(sample);
    let sign: u8 = if sample < 0 { 0x80 } else { 0 };
    let biased = sample.abs().min(ULAW_CLIP) + ULAW_BIAS;
    // biased is in [0x84, 0x7FFF]: its top set bit is bit 7..=14, i.e. exponent 0..=7.
    let exponent = (31 - biased.leading_zeros()) as i32 - 7;
    let mantissa = (biased >> (exponent + 3)) & 0x0F;
    !(sign | ((exponent as u8) << 4) | mantissa as u8)
}

/// Encodes one 16-bit linear sample as A-law.
#[inline]
pub fn linear_to_alaw(sample: i16) -> u8 {
    let (mask, magnitude) = if sample >= 0 {
        (0xD5u8, i32::from(sample))
    } else {
        // One's complement, as the reference coder does, maps -32768 into range.
        (0x55u8, i32::from(!sample))
    };
    let code = if magnitude < 0x100 {
        (magnitude >> 4) as u8
    } else {
        // magnitude in [0x100, 0x7FFF]: top set bit 8..=14, segment 1..=7.
        let segment = (31 - magnitude.leading_zeros()) as i32 - 7;
        let mantissa = (magnitude >> (segment + 3)) & 0x0F;
        ((segment as u8) << 4) | mantissa as u8
    };
    code ^ mask
}

const fn build_table(alaw: bool) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = if alaw {
            alaw_to_linear(code as u8)
        } else {
            ulaw_to_linear(code as u8)
        };
        code += 1;
    }
    table
}

static ULAW_TO_LINEAR: [i16; 256] = build_table(false);
static ALAW_TO_LINEAR: [i16; 256] = build_table(true);

/// Decodes u-law bytes into `out`, which must be at least as long as `payload`.
pub fn decode_ulaw(payload: &[u8], out: &mut [i16]) {
    for (sample, &code) in out.iter_mut().zip(payload) {
        *sample = ULAW_TO_LINEAR[usize::from(code)];
    }
}

/// Decodes A-law bytes into `out`, which must be at least as long as `payload`.
pub fn decode_alaw(payload: &[u8], out: &mut [i16]) {
    for (sample, &code) in out.iter_mut().zip(payload) {
        *sample = ALAW_TO_LINEAR[usize::from(code)];
    }
}

/// Encodes linear samples as u-law into `out`, pairwise up to the shorter slice.
pub fn encode_ulaw(pcm: &[i16], out: &mut [u8]) {
    for (code, &sample) in out.iter_mut().zip(pcm) {
        *code = linear_to_ulaw(sample);
    }
}

/// Encodes linear samples as A-law into `out`, pairwise up to the shorter slice.
pub fn encode_alaw(pcm: &[i16], out: &mut [u8]) {
    for (code, &sample) in out.iter_mut().zip(pcm) {
        *code = linear_to_alaw(sample);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_decodes_reference_values() {
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0xFE), 8);
        assert_eq!(ulaw_to_linear(0x7E), -8);
    }

    #[test]
    fn alaw_decodes_reference_values() {
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
    }

    #[test]
    fn ulaw_encodes_reference_values() {
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(32767), 0x80);
        assert_eq!(linear_to_ulaw(-32768), 0x00);
    }

    #[test]
    fn alaw_encodes_reference_values() {
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(-1), 0x55);
        assert_eq!(linear_to_alaw(32767), 0xAA);
        assert_eq!(linear_to_alaw(-32768), 0x2A);
    }

    #[test]
    fn tables_match_the_formula() {
        for code in 0..=255u8 {
            assert_eq!(ULAW_TO_LINEAR[usize::from(code)], ulaw_to_linear(code));
            assert_eq!(ALAW_TO_LINEAR[usize::from(code)], alaw_to_linear(code));
        }
    }

    #[test]
    fn every_code_survives_decode_then_encode() {
        for code in 0..=255u8 {
            // 0x7F is u-law's negative zero; it decodes to 0, which encodes as 0xFF.
            if code != 0x7F {
                assert_eq!(
                    linear_to_ulaw(ulaw_to_linear(code)),
                    code,
                    "u-law {code:#x}"
                );
            }
            assert_eq!(
                linear_to_alaw(alaw_to_linear(code)),
                code,
                "A-law {code:#x}"
            );
        }
    }

    #[test]
    fn ulaw_round_trip_error_is_within_half_a_step_for_every_sample() {
        for sample in i16::MIN..=i16::MAX {
            let back = i32::from(ulaw_to_linear(linear_to_ulaw(sample)));
            let error = (back - i32::from(sample)).abs();
            let magnitude = i32::from(sample).abs();
            let bound = if magnitude > ULAW_CLIP {
                magnitude - 32124
            } else {
                (magnitude + ULAW_BIAS) / 32 + 1
            };
            assert!(error <= bound, "{sample} -> {back}");
        }
    }

    #[test]
    fn alaw_round_trip_error_is_within_half_a_step_for_every_sample() {
        for sample in i16::MIN..=i16::MAX {
            let back = i32::from(alaw_to_linear(linear_to_alaw(sample)));
            let error = (back - i32::from(sample)).abs();
            let bound = (i32::from(sample).abs() / 32).max(8) + 1;
            assert!(error <= bound, "{sample} -> {back}");
        }
    }

    #[test]
    fn encoding_is_monotonic() {
        let mut previous = i16::MIN;
        for sample in i16::MIN..=i16::MAX {
            let u = ulaw_to_linear(linear_to_ulaw(sample));
            let a = alaw_to_linear(linear_to_alaw(sample));
            assert!(u >= ulaw_to_linear(linear_to_ulaw(previous)));
            assert!(a >= alaw_to_linear(linear_to_alaw(previous)));
            previous = sample;
        }
    }
}
