"""The CAM family: class activation maps as pure functions, plus FullGrad and guided CAMs."""

from fattr.cam.ablationcam import ablationcam
from fattr.cam.cameras import cameras
from fattr.cam.eigencam import eigencam
from fattr.cam.eigengradcam import eigengradcam
from fattr.cam.fem import fem
from fattr.cam.fullgrad import fullgrad, fullgrad_terms
from fattr.cam.gradcam import gradcam
from fattr.cam.gradcam_elementwise import gradcam_elementwise
from fattr.cam.gradcam_plus_plus import gradcam_plus_plus
from fattr.cam.guided import guided, guided_gradcam
from fattr.cam.hirescam import hirescam
from fattr.cam.layercam import layercam
from fattr.cam.scorecam import scorecam
from fattr.cam.smooth_gradcam_plus_plus import smooth_gradcam_plus_plus
from fattr.cam.sscam import sscam
from fattr.cam.xgradcam import xgradcam
from fattr.cam.xrai import xrai
from fattr.cam.xrai_segments import xrai_segments

__all__ = ["ablationcam", "cameras", "eigencam", "eigengradcam", "fem", "fullgrad",
           "fullgrad_terms", "gradcam", "gradcam_elementwise", "gradcam_plus_plus", "guided",
           "guided_gradcam",
           "hirescam", "layercam", "scorecam", "smooth_gradcam_plus_plus", "sscam", "xgradcam",
           "xrai", "xrai_segments"]
