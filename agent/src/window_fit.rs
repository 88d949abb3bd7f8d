//! The endpoint's windows sized to what they show (the consent prompt, the session bar and the
//! help window): an always-on-top bar that is half empty hides the user's own work for nothing.
//!
//! Each window lays its content out within a widest width chosen for it (text wraps there) and
//! takes the size the content took, measured by egui as it drew it; the window settles on the
//! frame after its content changed.

use eframe::egui;

/// Shows a window's content and resizes the window to it, asking the window system only when the
/// wanted size changes (a window manager that keeps its own idea of the size is not asked again
/// every frame).
#[derive(Debug, Default)]
pub struct FitToContent {
    asked: Option<egui::Vec2>,
}

impl FitToContent {
    /// Shows `add` in the window's frame, laid out as if the window were `width` wide whatever its
    /// size now, so that what wraps never depends on the size an earlier content left. Returns
    /// what `add` returned and where the content went (the frame's margins included, from the
    /// window's top-left corner), which is the size the window is given.
    pub fn show<R>(&mut self, ui: &mut egui::Ui, width: f32, add: impl FnOnce(&mut egui::Ui) -> R) -> (R, egui::Rect) {
        let frame = egui::Frame::central_panel(ui.style());
        let margins = f32::from(frame.inner_margin.left) + f32::from(frame.inner_margin.right);
        let shown = frame.show(ui, |ui| {
            ui.set_max_width(width - margins);
            add(ui)
        });
        let content = shown.response.rect;
        let want = egui::vec2(content.max.x.ceil(), content.max.y.ceil());
        if self.asked != Some(want) {
            self.asked = Some(want);
            ui.ctx().send_viewport_cmd(egui::ViewportCommand::InnerSize(want));
        }
        (shown.inner, content)
    }
}

/// A rectangle as the windows log it (`x,y,w,h`, in points, from the window's top-left corner).
pub fn logged(r: egui::Rect) -> String {
    format!("{:.0},{:.0},{:.0},{:.0}", r.min.x, r.min.y, r.width(), r.height())
}
