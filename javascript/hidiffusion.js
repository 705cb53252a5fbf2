// sd-webui-hidiffusion: the hint in the HiDiffusion accordion (the first line under its title,
// #script_<tab>_hidiffusion_size_hint) says what HiDiffusion will do with the current size, steps,
// sampler and settings -- the preset row `auto` picks, the steps RAU-Net and MSW-MSA run on, and a
// warning line when an enabled part runs on no step. It asks the read-only route
// below (API clients can ask it too). Nothing functional depends on this file.
(function() {
    const ROUTE = "./hidiffusion/schedule";
    const TABS = ["txt2img", "img2img"];
    const asked = {}; // tab -> the last query sent
    const timers = {};

    function find(id, inner) {
        return gradioApp().querySelector(inner ? `#${id} ${inner}` : `#${id}`);
    }

    function number(id) {
        const input = find(id, "input[type=number]");
        return input ? input.value : "";
    }

    function checked(id) {
        const box = find(id);
        const input = box && box.tagName === "INPUT" ? box : find(id, "input[type=checkbox]");
        return Boolean(input && input.checked);
    }

    function choice(id) {
        const input = find(id, "input[type=radio]:checked") || find(id, "input");
        return input ? input.value : "";
    }

    function query(tab) {
        const ours = (name) => `script_${tab}_hidiffusion_${name}`;
        const q = {
            width: number(`${tab}_width`),
            height: number(`${tab}_height`),
            steps: number(`${tab}_steps`),
            sampler: choice(`${tab}_sampling`),
            preset: choice(ours("preset")),
            raunet: checked(ours("raunet")),
            mswmsa: checked(ours("mswmsa")),
            time_mode: choice(ours("time_mode")),
            msw_start: number(ours("msw_start")),
            msw_end: number(ours("msw_end")),
        };
        if (checked(ours("custom_timing"))) {
            for (const name of ["t1", "t2", "aggressive"]) q[name] = number(ours(name));
        }
        if (tab === "img2img") {
            q.denoising = number("img2img_denoising_strength");
        } else if (checked("txt2img_hr-checkbox")) {
            Object.assign(q, {
                enable_hr: true,
                hires: choice(ours("hires")),
                hr_scale: number("txt2img_hr_scale"),
                hr_resize_x: number("txt2img_hr_resize_x"),
                hr_resize_y: number("txt2img_hr_resize_y"),
                hr_steps: number("txt2img_hires_steps"),
            });
            const hrSampler = choice("hr_sampler");
            if (hrSampler && hrSampler !== "Use same sampler") q.hr_sampler = hrSampler;
        }
        const model = (typeof opts !== "undefined" && opts.sd_model_checkpoint) || "";
        return new URLSearchParams(q).toString() + "#" + model; // a new model: ask again
    }

    async function update(tab) {
        const hint = gradioApp().getElementById(`script_${tab}_hidiffusion_size_hint`);
        if (!hint) return;
        const enabled = checked(`script_${tab}_hidiffusion_enabled-visible-checkbox`);
        const q = enabled ? query(tab) : "";
        if (q === asked[tab]) return;
        asked[tab] = q;
        let lines = [];
        if (enabled) {
            try {
                const response = await fetch(`${ROUTE}?${q.split("#")[0]}`);
                const info = response.ok ? await response.json() : null;
                if (info && info.hint) {
                    lines = info.error ? [["error", info.error]] : [["text", info.text]];
                    for (const w of info.error ? [] : info.warnings || []) lines.push(["warning", `⚠ ${w}`]);
                }
            } catch (e) {
                lines = [];
            }
        }
        if (asked[tab] === q) show(hint, lines.filter(([, text]) => text));
    }

    // One wrapping line per part: the schedule, then each warning (class hidiffusion-hint-<kind>).
    function show(hint, lines) {
        hint.replaceChildren(...lines.map(([kind, text]) => {
            const line = document.createElement("div");
            line.className = `hidiffusion-hint-${kind}`;
            line.textContent = text;
            return line;
        }));
    }

    function later(tab) {
        clearTimeout(timers[tab]);
        timers[tab] = setTimeout(() => update(tab), 300);
    }

    onUiLoaded(function() {
        for (const tab of TABS) {
            const panel = gradioApp().getElementById(`tab_${tab}`);
            if (panel) {
                panel.addEventListener("input", () => later(tab));
                panel.addEventListener("change", () => later(tab));
            }
            update(tab);
        }
    });

    // Dropdowns, pasted parameters and "Send to" change values without input events.
    onAfterUiUpdate(function() {
        for (const tab of TABS) later(tab);
    });

    onOptionsChanged(function() {
        for (const tab of TABS) later(tab);
    });
})();
