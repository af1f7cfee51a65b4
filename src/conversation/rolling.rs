//! The rolling score: an exponentially weighted mean of turn valences whose weights halve every
//! `half_life` turns. The first turn sets the score.

/// Per-speaker rolling valence.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RollingScore {
    value: f32,
    turns: u32,
}

impl RollingScore {
    /// The decay factor for a half-life in turns: each new turn keeps `decay` of the old score.
    pub fn decay_for(half_life_turns: f32) -> f32 {
        0.5f32.powf(1.0 / half_life_turns)
    }

    pub fn update(&mut self, valence: f32, decay: f32) -> f32 {
        self.value = if self.turns == 0 {
            valence
        } else {
            decay * self.value + (1.0 - decay) * valence
        };
        self.turns += 1;
        self.value
    }

    pub fn value(&self) -> f32 {
        self.value
    }

    pub fn turns(&self) -> u32 {
        self.turns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_life_halves_the_old_weight() {
        let decay = RollingScore::decay_for(2.0);
        let mut r = RollingScore::default();
        assert_eq!(r.update(1.0, decay), 1.0);
        r.update(-1.0, decay);
        r.update(-1.0, decay);
        // After two turns the first turn's weight is one half: 0.5·1 + 0.5·(-1) = 0.
        assert!(r.value().abs() < 1e-6, "{}", r.value());
        assert_eq!(r.turns(), 3);
    }
}
