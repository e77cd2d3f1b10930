//! The step a blocking thread is at, for naming the step that is stuck.
//!
//! The service installs a [`Slot`] on the blocking thread that runs a
//! piece of storage work; the OS boundary marks each step that can block
//! (a mount, a loop ioctl, an external tool) with [`enter`]. When the
//! work passes its deadline, the service reads the slot and says which
//! step is stuck. A thread without a slot ignores the marks.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

/// Where one piece of work writes its current step.
#[derive(Debug, Clone, Default)]
pub struct Slot(Arc<Mutex<String>>);

impl Slot {
    /// The last step entered ("" before the first).
    pub fn get(&self) -> String {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn set(&self, step: &str) {
        if let Ok(mut s) = self.0.lock() {
            s.clear();
            s.push_str(step);
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Slot>> = const { RefCell::new(None) };
}

/// Installed slot; uninstalls on drop.
#[derive(Debug)]
pub struct Installed(());

impl Drop for Installed {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = None);
    }
}

/// Makes `slot` receive this thread's steps until the guard drops.
pub fn install(slot: Slot) -> Installed {
    CURRENT.with(|c| *c.borrow_mut() = Some(slot));
    Installed(())
}

/// Marks the step this thread is entering (`what` names it with its
/// object: "mount /dev/loop3 on /var/lib/berth/mounts/v1").
pub fn enter(what: impl AsRef<str>) {
    CURRENT.with(|c| {
        if let Some(s) = c.borrow().as_ref() {
            s.set(what.as_ref());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_reach_the_installed_slot_only() {
        let slot = Slot::default();
        enter("before");
        assert_eq!(slot.get(), "");
        {
            let _g = install(slot.clone());
            enter("statvfs /x");
            assert_eq!(slot.get(), "statvfs /x");
        }
        enter("after");
        assert_eq!(slot.get(), "statvfs /x");
    }
}
