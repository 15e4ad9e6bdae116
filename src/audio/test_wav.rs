//! WAV files for the crate's unit tests.

/// `secs` of a 440 Hz tone peaking at `amplitude`, as a mono 16-bit
/// PCM WAV at `rate` Hz.
pub fn tone(rate: u32, secs: f32, amplitude: f32) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = std::io::Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut out, spec).expect("WAV header");
    for i in 0..(secs * rate as f32) as u32 {
        let t = i as f32 / rate as f32;
        let v = (std::f32::consts::TAU * 440.0 * t).sin() * amplitude;
        w.write_sample(v as i16).expect("WAV sample");
    }
    w.finalize().expect("WAV finalize");
    out.into_inner()
}
