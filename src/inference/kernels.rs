//! Fused kernels for the per-token int8 arithmetic of the shipped models, registered with every
//! session as the custom operator domain [`DOMAIN`].
//!
//! The shipped graphs quantise each activation row (token) on its own, so a text's scores do not
//! depend on the texts it shares a call with, as standard operators: `Abs`, `ReduceMax`, `Max`,
//! `Mul` for the row's scale, `Shape`, `Expand` and a blocked `QuantizeLinear` for its bytes, then
//! after each integer GEMM (`MatMulIntegerToFloat`) a `Mul` by the row's scale and an `Add` of the
//! bias: about ten passes over the tensor and as many operator dispatches around every GEMM. The
//! two operators here do the same arithmetic in one pass each, with the same roundings in the same
//! order, so the scores are bit-identical (the test in src/inference/mod.rs checks both shipped
//! models, one text per call and batched):
//!
//! - `RowQuantize(x, eps, inv_max, zero_point) -> (q, scale)`: per row of the last axis,
//!   `scale = max(max |x|, eps) * inv_max` and `q = saturate(round_half_even(x / scale) + zero_point)`
//!   (uint8), as `QuantizeLinear` computes it.
//! - `RowScaleBias(acc, scale[, bias]) -> y`: `y = acc * scale_row (+ bias_col)`, rounded after the
//!   product and after the sum like the `Mul` and `Add` it replaces.
//!
//! Model files keep the standard operators: src/inference/fuse.rs puts these in when a model is
//! loaded (`model.fused_kernels`).

use ort::operator::{
    BoxedKernel, ComputeContext, KernelContext, Operator, OperatorDomain, OperatorInput,
    OperatorOutput,
};
use ort::value::TensorElementType;

/// The custom operator domain of the fused kernels.
pub const DOMAIN: &str = "ai.emotion";

/// The domain with both operators, for a session builder.
pub fn domain() -> ort::Result<OperatorDomain> {
    OperatorDomain::new(DOMAIN)?
        .add(RowQuantize)?
        .add(RowScaleBias)
}

fn missing(what: &str) -> ort::Error {
    ort::Error::new(format!("{what} missing"))
}

/// Per-row dynamic quantisation to uint8.
struct RowQuantize;

impl Operator for RowQuantize {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        "RowQuantize"
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [
            OperatorInput::required(TensorElementType::Float32),
            OperatorInput::required(TensorElementType::Float32),
            OperatorInput::required(TensorElementType::Float32),
            OperatorInput::required(TensorElementType::Uint8),
        ]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [
            OperatorOutput::required(TensorElementType::Uint8),
            OperatorOutput::required(TensorElementType::Float32),
        ]
    }

    fn create_kernel<'attr>(&self, _: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        Ok(Box::new(|ctx: &ComputeContext| {
            let x = ctx.input(0)?.ok_or_else(|| missing("RowQuantize x"))?;
            let (shape, x) = x.try_extract_tensor::<f32>()?;
            let scalar = |i: usize| -> ort::Result<f32> {
                let v = ctx.input(i)?.ok_or_else(|| missing("RowQuantize scalar"))?;
                let (_, v) = v.try_extract_tensor::<f32>()?;
                v.first()
                    .copied()
                    .ok_or_else(|| missing("RowQuantize scalar value"))
            };
            let (eps, inv_max) = (scalar(1)?, scalar(2)?);
            let zero_point = {
                let v = ctx
                    .input(3)?
                    .ok_or_else(|| missing("RowQuantize zero_point"))?;
                let (_, v) = v.try_extract_tensor::<u8>()?;
                *v.first()
                    .ok_or_else(|| missing("RowQuantize zero_point value"))?
            };
            let width = shape.last().copied().unwrap_or(1).max(1) as usize;
            let mut scale_shape = shape.to_vec();
            if let Some(last) = scale_shape.last_mut() {
                *last = 1;
            }
            let mut q = ctx
                .output(0, shape.to_vec())?
                .ok_or_else(|| missing("RowQuantize q"))?;
            let (_, q) = q.try_extract_tensor_mut::<u8>()?;
            let mut scale = ctx
                .output(1, scale_shape)?
                .ok_or_else(|| missing("RowQuantize scale"))?;
            let (_, scale) = scale.try_extract_tensor_mut::<f32>()?;
            row_quantize(x, width, eps, inv_max, zero_point, q, scale);
            Ok(())
        }))
    }
}

/// `acc * scale_row (+ bias_col)`.
struct RowScaleBias;

impl Operator for RowScaleBias {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        "RowScaleBias"
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [
            OperatorInput::required(TensorElementType::Float32),
            OperatorInput::required(TensorElementType::Float32),
            OperatorInput::optional(TensorElementType::Float32),
        ]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(&self, _: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        Ok(Box::new(|ctx: &ComputeContext| {
            let acc = ctx.input(0)?.ok_or_else(|| missing("RowScaleBias acc"))?;
            let (shape, acc) = acc.try_extract_tensor::<f32>()?;
            let scale = ctx.input(1)?.ok_or_else(|| missing("RowScaleBias scale"))?;
            let (_, scale) = scale.try_extract_tensor::<f32>()?;
            let bias = match ctx.num_inputs()? > 2 {
                true => ctx.input(2)?,
                false => None,
            };
            let bias = match &bias {
                Some(b) => Some(b.try_extract_tensor::<f32>()?.1),
                None => None,
            };
            let width = shape.last().copied().unwrap_or(1).max(1) as usize;
            if scale.len() * width != acc.len() || bias.is_some_and(|b| b.len() != width) {
                return Err(ort::Error::new(format!(
                    "RowScaleBias: acc {shape:?} with {} row scales and a bias of {:?}",
                    scale.len(),
                    bias.map(<[f32]>::len)
                )));
            }
            let mut y = ctx
                .output(0, shape.to_vec())?
                .ok_or_else(|| missing("RowScaleBias y"))?;
            let (_, y) = y.try_extract_tensor_mut::<f32>()?;
            row_scale_bias(acc, width, scale, bias, y);
            Ok(())
        }))
    }
}

/// Quantises each row of `width` values of `x` into `q` with its own scale (into `scale`).
///
/// Compiled for the widest vector instructions the CPU has (`pulp` picks AVX-512, AVX2 or the
/// baseline at run time); the rounding is the addition of 1.5 x 2^23, which rounds half to even
/// like `QuantizeLinear`'s conversion for any level below 2^22 (the levels here stay within the
/// row's +-127) and leaves the level in the sum's low bits.
pub fn row_quantize(
    x: &[f32],
    width: usize,
    eps: f32,
    inv_max: f32,
    zero_point: u8,
    q: &mut [u8],
    scale: &mut [f32],
) {
    struct Run<'a>(&'a [f32], usize, f32, f32, u8, &'a mut [u8], &'a mut [f32]);
    impl pulp::WithSimd for Run<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) {
            let Run(x, width, eps, inv_max, zero_point, q, scale) = self;
            row_quantize_scalar(x, width, eps, inv_max, zero_point, q, scale)
        }
    }
    pulp::Arch::new().dispatch(Run(x, width, eps, inv_max, zero_point, q, scale))
}

#[inline(always)]
fn row_quantize_scalar(
    x: &[f32],
    width: usize,
    eps: f32,
    inv_max: f32,
    zero_point: u8,
    q: &mut [u8],
    scale: &mut [f32],
) {
    const ROUND: f32 = 12_582_912.0;
    const ROUND_BITS: i32 = 0x4B40_0000;
    let zero_point = i32::from(zero_point);
    for ((row, q_row), s) in x
        .chunks_exact(width)
        .zip(q.chunks_exact_mut(width))
        .zip(scale.iter_mut())
    {
        // 32 running maxima (independent vector registers, so the reduction is not one long
        // chain of dependent steps), each a compare and select, which is one vector max.
        let mut lanes = [0.0f32; 32];
        let mut chunks = row.chunks_exact(32);
        for chunk in &mut chunks {
            for (m, v) in lanes.iter_mut().zip(chunk) {
                let a = v.abs();
                *m = if a > *m { a } else { *m };
            }
        }
        let max = (chunks.remainder().iter())
            .chain(&lanes)
            .fold(0.0f32, |m, v| if v.abs() > m { v.abs() } else { m });
        let row_scale = max.max(eps) * inv_max;
        *s = row_scale;
        for (v, out) in row.iter().zip(q_row.iter_mut()) {
            // As QuantizeLinear: divide, round half to even, add the zero point, saturate. The
            // sum's bits less ROUND's are the rounded level (integer steps: no float-to-int
            // conversion, which does not vectorise as well).
            let level = (v / row_scale + ROUND).to_bits() as i32 - ROUND_BITS;
            *out = (level + zero_point).clamp(0, 255) as u8;
        }
    }
}

/// `y = acc * scale_row (+ bias)` over rows of `width`: the product rounded, then the sum.
pub fn row_scale_bias(
    acc: &[f32],
    width: usize,
    scale: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    struct Run<'a>(
        &'a [f32],
        usize,
        &'a [f32],
        Option<&'a [f32]>,
        &'a mut [f32],
    );
    impl pulp::WithSimd for Run<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) {
            let Run(acc, width, scale, bias, y) = self;
            row_scale_bias_scalar(acc, width, scale, bias, y)
        }
    }
    pulp::Arch::new().dispatch(Run(acc, width, scale, bias, y))
}

#[inline(always)]
fn row_scale_bias_scalar(
    acc: &[f32],
    width: usize,
    scale: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    for ((row, out), &s) in acc
        .chunks_exact(width)
        .zip(y.chunks_exact_mut(width))
        .zip(scale)
    {
        match bias {
            Some(bias) => {
                for ((a, o), b) in row.iter().zip(out.iter_mut()).zip(bias) {
                    *o = a * s + b;
                }
            }
            None => {
                for (a, o) in row.iter().zip(out.iter_mut()) {
                    *o = a * s;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantises_each_row_with_its_own_scale() {
        let x = [0.5f32, -1.0, 0.25, 0.0, 10.0, -4.0, 2.5, 1.0];
        let (mut q, mut s) = ([0u8; 8], [0f32; 2]);
        let inv = 1.0f32 / 127.0;
        row_quantize(&x, 4, 1e-8, inv, 128, &mut q, &mut s);
        assert_eq!(s, [inv, 10.0 * inv]);
        assert_eq!(q, [192, 1, 160, 128, 255, 77, 160, 141]);
        let (mut q1, mut s1) = ([0u8; 4], [0f32; 1]);
        row_quantize(&x[4..], 4, 1e-8, inv, 128, &mut q1, &mut s1);
        assert_eq!(
            (&q[4..], s[1]),
            (&q1[..], s1[0]),
            "a row does not depend on the others"
        );
    }

    #[test]
    fn rounds_half_to_even_and_keeps_a_zero_row_finite() {
        // Scale 1 (128 x 1/128, both exact): levels 0.5, 1.5 and -2.5 round to 0, 2 and -2, and
        // 128 + 128 saturates; an all-zero row takes the eps scale.
        let x = [128.0f32, 0.5, 1.5, -2.5];
        let (mut q, mut s) = ([0u8; 4], [0f32; 1]);
        row_quantize(&x, 4, 1e-8, 1.0 / 128.0, 128, &mut q, &mut s);
        assert_eq!((q, s), ([255, 128, 130, 126], [1.0]));
        let (mut q, mut s) = ([0u8; 2], [0f32; 1]);
        let inv = 1.0f32 / 127.0;
        row_quantize(&[0.0, 0.0], 2, 1e-8, inv, 128, &mut q, &mut s);
        assert_eq!((q, s), ([128, 128], [1e-8 * inv]));
    }

    #[test]
    fn scales_rows_and_adds_the_bias() {
        let acc = [1.0f32, 2.0, 3.0, 4.0];
        let mut y = [0f32; 4];
        row_scale_bias(&acc, 2, &[2.0, 0.5], Some(&[0.25, -1.0]), &mut y);
        assert_eq!(y, [2.25, 3.0, 1.75, 1.0]);
        row_scale_bias(&acc, 2, &[2.0, 0.5], None, &mut y);
        assert_eq!(y, [2.0, 4.0, 1.5, 2.0]);
    }
}
