//! A set of techniques as a bitset over a catalog's technique order: what
//! coverage keeps per account and combines (union, minimum, breakdown) in
//! a few word operations instead of string sets.

/// Room for 1,024 techniques (ATT&CK 18.1 has 691).
const WORDS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TechniqueSet([u64; WORDS]);

impl TechniqueSet {
    pub const CAPACITY: usize = WORDS * 64;

    pub fn insert(&mut self, index: usize) {
        self.0[index / 64] |= 1 << (index % 64);
    }

    pub fn contains(&self, index: usize) -> bool {
        index < Self::CAPACITY && self.0[index / 64] & (1 << (index % 64)) != 0
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    fn zip(&self, other: &Self, f: impl Fn(u64, u64) -> u64) -> Self {
        let mut out = [0u64; WORDS];
        for (i, word) in out.iter_mut().enumerate() {
            *word = f(self.0[i], other.0[i]);
        }
        Self(out)
    }

    pub fn union(&self, other: &Self) -> Self {
        self.zip(other, |a, b| a | b)
    }

    pub fn intersection(&self, other: &Self) -> Self {
        self.zip(other, |a, b| a & b)
    }

    pub fn difference(&self, other: &Self) -> Self {
        self.zip(other, |a, b| a & !b)
    }

    /// The indices in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..Self::CAPACITY).filter(|i| self.contains(*i))
    }

    /// Little-endian words, trailing zero bytes trimmed (what is stored).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes: Vec<u8> = self.0.iter().flat_map(|w| w.to_le_bytes()).collect();
        while bytes.last() == Some(&0) {
            bytes.pop();
        }
        bytes
    }

    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut words = [0u64; WORDS];
        for (i, chunk) in bytes.chunks(8).take(WORDS).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            words[i] = u64::from_le_bytes(word);
        }
        Self(words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations_and_storage_round_trip() {
        let mut a = TechniqueSet::default();
        let mut b = TechniqueSet::default();
        for i in [0, 63, 64, 690] {
            a.insert(i);
        }
        for i in [63, 100] {
            b.insert(i);
        }
        assert_eq!(a.len(), 4);
        assert_eq!(a.union(&b).len(), 5);
        assert_eq!(a.intersection(&b).iter().collect::<Vec<_>>(), [63]);
        assert_eq!(a.difference(&b).iter().collect::<Vec<_>>(), [0, 64, 690]);
        assert_eq!(TechniqueSet::from_bytes(&a.to_bytes()), a);
        assert!(TechniqueSet::default().to_bytes().is_empty());
        assert!(TechniqueSet::from_bytes(&[]).is_empty());
    }
}
