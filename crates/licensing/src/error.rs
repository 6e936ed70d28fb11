//! Errors of the licensing model.

/// Every error the licensing library raises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A value breaks a rule of the model (bad key, duplicate plan, negative seats…).
    #[error("{0}")]
    Invalid(String),
    /// A plan that the product does not have.
    #[error("product {product} has no plan {plan}")]
    UnknownPlan {
        /// The product.
        product: String,
        /// The missing plan.
        plan: String,
    },
    /// An assignment rule's filter does not parse or names unknown attributes.
    #[error("{0}")]
    BadFilter(String),
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;
