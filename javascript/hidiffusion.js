// sd-webui-hidiffusion: a hint in the HiDiffusion accordion when the image is not larger than the
// loaded model's native size (HiDiffusion then leaves the generation unchanged).
// Nothing functional depends on this file; the HTTP API never runs it.
(function() {
    const TABS = ["txt2img", "img2img"];
    let cached = {model: null, info: null};

    async function nativeSize() {
        const model = (typeof opts !== "undefined" && opts.sd_model_checkpoint) || "";
        if (cached.info && cached.model === model) return cached.info;
        try {
            const response = await fetch("./hidiffusion/native-size");
            if (!response.ok) return null;
            cached = {model: model, info: await response.json()};
        } catch (e) {
            return null;
        }
        return cached.info;
    }

    function numberIn(id) {
        const input = gradioApp().querySelector(`#${id} input[type=number]`);
        return input ? Number(input.value) : NaN;
    }

    async function update(tab) {
        const hint = gradioApp().getElementById(`script_${tab}_hidiffusion_size_hint`);
        const enabled = gradioApp().querySelector(`#script_${tab}_hidiffusion_enabled-visible-checkbox`);
        if (!hint) return;
        let text = "";
        if (enabled && enabled.checked) {
            const info = await nativeSize();
            const width = numberIn(`${tab}_width`);
            const height = numberIn(`${tab}_height`);
            if (info && info.hint && info.supported && width * height <= info.width * info.height) {
                text = `${width}×${height} is not above this model's native ${info.width}×${info.height}: ` +
                    "HiDiffusion changes nothing here";
            }
        }
        hint.textContent = text;
    }

    onUiLoaded(function() {
        for (const tab of TABS) {
            const watched = [`${tab}_width`, `${tab}_height`, `script_${tab}_hidiffusion_enabled-visible-checkbox`];
            for (const id of watched) {
                const element = gradioApp().getElementById(id);
                if (element) {
                    element.addEventListener("input", () => update(tab));
                    element.addEventListener("change", () => update(tab));
                }
            }
            update(tab);
        }
    });

    onOptionsChanged(function() {
        for (const tab of TABS) update(tab);
    });
})();
