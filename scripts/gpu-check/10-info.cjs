/** What was found: the addon, the driver and device, NVRTC, and the compile target. */
'use strict';

module.exports = {
  name: 'info',
  async run(ctx) {
    const { info, device } = ctx;
    console.log(`addon   ${info.addon.source}: ${info.addon.path}`);
    console.log(
      info.driver.available
        ? `driver  ${info.driver.version}; ` +
            info.driver.devices.map((d) => `#${d.index} ${d.name} sm_${d.computeCapability.join('')} ${d.smCount} SMs`).join(', ')
        : `driver  unavailable: ${info.driver.reason}`,
    );
    console.log(info.nvrtc.available ? `nvrtc   ${info.nvrtc.version.join('.')} (${info.nvrtc.foundBy}) ${info.nvrtc.path}` : `nvrtc   unavailable: ${info.nvrtc.reason}`);
    await ctx.check('addon loads', () => `${info.addon.source}, napi`);
    if (!device) return;
    ctx.metric('driver version', info.driver.version, '');
    ctx.metric('device memory', device.totalMemory / 2 ** 30, 'GiB', device.name);
    if (info.nvrtc.available) {
      await ctx.check('compile target', () => {
        if (ctx.targetError) throw ctx.targetError;
        console.log(`target  ${ctx.target.target} (${ctx.target.kind})${ctx.target.warning ? `: ${ctx.target.warning}` : ''}`);
        return `${ctx.target.target} (${ctx.target.kind})`;
      });
    }
  },
};
